"""What the hotline does with final grades: hash and URL list exports, NCMEC CyberTipline
reports, and signed webhook deliveries (documented in docs/actions.md).

The modules are imported on their own (``tipline.actions.exports``, ``.ncmec``, ``.webhooks``)
so that, for example, a worker delivering webhooks does not import the export code.
"""
