"""Operations: what an operator runs beside the pipeline (the `ticketrelay` command, migrations,
bulk re-issuance, status, the metrics exporter). Imports the pipeline; the pipeline never
imports this package."""
