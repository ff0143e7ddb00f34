"""Veil dashboard: Streamlit entry point, identity, navigation, shared components, CLI."""
