"""The market as submitters and GPU owners see it: what is offered (``view``), what a job would
cost (``quote``), and the recent throughput both are measured from (``throughput``). Pure domain
code; ``service`` reads the coordinator's live state into it."""
