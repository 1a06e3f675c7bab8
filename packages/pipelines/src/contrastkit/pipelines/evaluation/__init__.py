"""Evaluation of a pretrained backbone: features, kNN, linear probe, fine-tuning, t-SNE, reports."""
