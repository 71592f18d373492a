"""Planners: a chemist's goal in words -> a validated DesignSpec.

Two backends behind one interface (:class:`tessera.agents.planner.base.Planner`): the embedded offline
planner (deterministic phrase rules, the default when no LLM is configured) and an OpenAI-compatible chat
endpoint (OpenAI, vLLM, Ollama) whose output is validated against the DesignSpec JSON Schema.
"""
