"""A user's own code, as the own-model tests import it: models and data factories."""
