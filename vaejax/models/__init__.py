"""The flax.linen modules of every family: layers, VAEs and autoencoders, DCGAN, U-Net, the
LeNet judge."""

from vaejax.models.classifier import Activations, LeNet
from vaejax.models.gan import (
    GAN,
    NORMALIZATIONS,
    BatchNorm,
    Discriminator,
    Generator,
    dcgan,
    dcgan_init,
    layout,
)
from vaejax.models.hierarchical import TwoLayerVAE, burda_two_layer_vae
from vaejax.models.layers import (
    IMPLEMENTATIONS,
    Conv2D,
    ConvTranspose2D,
    conv_matmul_grad,
    conv_transpose_matmul_grad,
    resolve_implementation,
)
from vaejax.models.precision import DTYPES, ComputeIn, cast_floats, compute_in
from vaejax.models.unet import MLPDenoiser, ResidualBlock, UNet, timestep_embedding
from vaejax.models.vae import (
    ACTIVATIONS,
    VAE,
    Autoencoder,
    ConditionalVAE,
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    TorchDense,
    burda_vae,
    conv_autoencoder,
    conv_vae,
    count_params,
    mlp_autoencoder,
    mlp_cvae,
    mlp_vae,
    reparameterize,
    torch_linear_init,
)
