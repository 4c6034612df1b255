"""The Azure provider for ccm."""
