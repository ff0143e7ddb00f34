"""Veil data layer: models, engine, catalog, migrations, ingestion, materialisation, demo data. No Streamlit."""
