"""Placement: which contiguous slice ranges run on which device (no TensorFlow, no sockets).

``make_plan(load_profile(path), PlanOptions(...))`` is what ``splitter configure`` calls;
``write_plan`` / ``load_plan`` read and write plan.yaml (docs/formats.md).
"""

from splitter.planning.configure import PlanOptions, PlanResult, make_plan
from splitter.planning.plan_file import load_plan, plan_document, write_plan

__all__ = ["PlanOptions", "PlanResult", "load_plan", "make_plan", "plan_document", "write_plan"]
