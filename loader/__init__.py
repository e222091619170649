"""The loader: input files -> validated columns -> snapshot arrays -> Redis.

Modules: ``tables`` (reading CSV / JSON Lines into string columns with exact
line numbers, and vectorised validation of codes, dates and enumerations),
``registry`` and ``status_feed`` (the two input files of SPEC §6),
``timeline`` (status intervals -> change points), ``build`` (columns ->
the arrays of ``contract.snapshot``), ``publish`` (atomic versioned writes to
Redis), ``sample`` (a deterministic demo data set) and ``__main__`` (the
``eligibility-loader`` CLI). Nothing is published unless every record is valid.
"""
