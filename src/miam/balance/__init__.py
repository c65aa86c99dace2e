"""Imbalance feedback (MIAM's tracker) and the balancing methods of the related work."""

from miam.balance.methods import BalancingMethod, get_method, list_methods
from miam.balance.tracker import ImbalanceTracker

__all__ = ["BalancingMethod", "ImbalanceTracker", "get_method", "list_methods"]
