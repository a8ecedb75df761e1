"""Dynamics models: analytic physics, symplectic encoder, active decoder, MetaSym, baselines."""
