"""Training recipes: a template-method trainer and its segmentation and classification variants."""
