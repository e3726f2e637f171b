"""Automation: event ingress, triggers, the scheduler, the asset materializer."""
