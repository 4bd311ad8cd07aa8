"""The constrained-RL allocator ``crl`` (Malik et al., ICPR 2022): CMDP, PPO-Lagrangian agent, search."""

from secateurs.allocation.crl.agent import AgentConfig, PPOLagrangian, gae
from secateurs.allocation.crl.allocator import CRLAllocator
from secateurs.allocation.crl.cmdp import AllocationCMDP, Outcome
from secateurs.allocation.crl.search import SearchConfig, SearchResult, run_search

__all__ = ["AgentConfig", "AllocationCMDP", "CRLAllocator", "Outcome", "PPOLagrangian", "SearchConfig",
           "SearchResult", "gae", "run_search"]
