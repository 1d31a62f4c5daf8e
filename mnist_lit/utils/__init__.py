"""Small shared utilities that import neither torch nor Lightning."""
