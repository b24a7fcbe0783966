"""Agents: ingestion (providers -> raw topics) and arbitration (raw -> derived topics)."""
