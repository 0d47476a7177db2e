"""LOG_EVENTs: their schema (`schema.py`), Elasticsearch's side (`elastic.py`) and delivery (`shipper.py`).

Every field name the service, the watchdog, Filebeat and Kibana use comes from `schema.py`.
"""
