"""Constitutional AI: constitutions, critique → revision, RLAIF preference labelling."""

from alignkit.cai.constitution import Constitution, Principle, load_constitution

__all__ = ["Constitution", "Principle", "load_constitution"]
