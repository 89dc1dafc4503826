"""The model catalog: providers, their models and aliases (jan.admin.v1.ModelCatalogService), and routing."""
