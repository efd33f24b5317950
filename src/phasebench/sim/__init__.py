"""Predict what cannot be measured: phase profiles, a serving simulator, disaggregation."""
