"""The kopf operator: thin handlers around one idempotent reconcile per kind."""
