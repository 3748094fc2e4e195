"""Networks for learned scores (:mod:`.networks`)."""

from nonrev.models.networks import NETWORKS, ConvNet, MLPNet, SinusoidalTimeEmbedding, build_network

__all__ = ["ConvNet", "MLPNet", "NETWORKS", "SinusoidalTimeEmbedding", "build_network"]
