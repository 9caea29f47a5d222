"""What a model and a GPU are: config.json facts, the built-in catalog, the Hub, the GPU catalog."""
