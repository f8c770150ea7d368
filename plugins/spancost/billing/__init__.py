"""Billing sources: Cost Explorer, the AWS Price List, SageMaker endpoints, the AWS request log."""
