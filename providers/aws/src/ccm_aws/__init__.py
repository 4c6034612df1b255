"""The AWS provider for ccm."""
