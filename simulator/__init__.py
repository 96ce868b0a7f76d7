"""The seeded world, dataset loaders and offline metrics."""
