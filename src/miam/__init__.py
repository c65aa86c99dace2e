"""miam: Modality Imbalance-Aware Masking for multimodal ecological models."""

__version__ = "0.1.0"
