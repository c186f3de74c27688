"""Assets of this stage."""
