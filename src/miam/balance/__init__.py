"""Imbalance feedback (MIAM's tracker) and, later, the balancing methods of related work."""

from miam.balance.tracker import ImbalanceTracker

__all__ = ["ImbalanceTracker"]
