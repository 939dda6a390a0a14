"""Attacks: L∞ PGD pieces (`attrrob.attacks.pgd`) and attribution attacks (`attrrob.attacks.saliency`)."""
