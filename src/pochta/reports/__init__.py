"""Aggregate reports: DMARC (RFC 7489 §7) received and sent, kept in one SQLite database.

- ``store.py``: ``reports.db`` in the data dir (``open_reports_db``, WAL, busy timeout; each
  module keeps its own tables with ``ensure_schema``), the DMARC evaluations cleanup records
  (``DmarcEvaluation``, ``EvaluationRecorder``), the received reports and the sent-reports log.
- ``inbox.py``: ``ingest(kind, message)``, what ``deliver/report.py`` calls for a message
  addressed to a ``report:KIND`` alias target; ``INGESTERS`` dispatches by kind.
- ``attachments.py``: the XML out of a report message (gzip, zip or plain), size-capped.
- ``dmarc_xml.py``: the RFC 7489 Appendix C document, built and parsed.
- ``dmarc_send.py``: the §7.2 job: one report per From domain with ``rua``, the §7.1
  external-destination check, the ``!size`` limit, the mail written into maildrop/.

It imports the shared kernel (config, mailauth, mime, receive.maildrop's file format) and
nothing of the mail flow's stages, which take from it only what they call.
"""
