"""Remedies for vanishing and exploding signals: initialisations, transforms, residuals, norms."""
