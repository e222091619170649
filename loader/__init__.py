"""The loader: input files -> validated columns -> points engine -> snapshot -> Redis.

It imports ``contract`` (codes, days, errors, the snapshot and change
formats), never ``gateway``. Nothing is published unless every record is valid.

    cli          ``eligibility-loader`` / ``python -m loader``: arguments,
                 printing, exit codes only (``__main__`` is its shim)
    pipeline     the work: read -> derive -> build (``read_and_build``), then
                 ``load`` (a snapshot), ``change`` (a live change),
                 ``read_status``, ``explain``
    tables       CSV / JSON Lines -> string columns with exact line numbers
    columns      string columns -> codes, day numbers, enums, integers
                 (vectorised; the encodings are ``contract.codes`` / ``.days``)
    registry     the registry file (SPEC §6)
    status_feed  the authority's status feed (SPEC §6)
    ledger       the scoring ledger (SPEC §7)
    policy       points policies, one JSON file a province (``policies/``)
    points/      the points engine: ledger + policy -> status timelines
    explain      one practitioner's replay in words
    timeline     status intervals -> status change points
    build        validated columns + timelines -> the snapshot arrays
    publish      atomic versioned snapshot writes to Redis
    changes      live changes on top of the current snapshot
    sample       a deterministic demo data set
"""
