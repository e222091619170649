# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, infer_types=False
"""The compiled claim path: CheckClaimRequest bytes in, CheckClaimResponse
bytes out, in one pass with no Python object per line (issue 14).

    check(view, data, today_day) ->
        bytes                    the response; no line was an emergency override
        (bytes, overrides)       the response and, per overridden line,
                                 (line index, service day, reason overridden)
        PUNT                     not the canonical wire form this pass reads
                                 (groups, corrupt or truncated fields, bad
                                 UTF-8): gateway.servicer parses it with
                                 protobuf, which refuses it with protobuf's own
                                 error or re-encodes it canonically
        INVALID                  a request SPEC §3 refuses: gateway.servicer
                                 has gateway.claims name the field

The rules are SPEC §4, in the order ``gateway/reference.py`` states them
(the readable oracle the tests compare this with, byte for byte). The index
is ``PackedIndex``: a hash table of 16-byte records, one per practitioner,
so a typical line (one registration, no status change) reads one cache line;
the rest read the snapshot's arrays as ``gateway.index.StatusIndex`` does.

Counters (lines by channel, decision and reason; rejected amounts; claim
sizes) are accumulated in arrays that ``gateway.ops.metrics`` exports when
Prometheus scrapes: no Python work per call for them.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

import mmap

import numpy as np

cdef extern from *:
    """
    /* Multiplicative hashing (Knuth), mapped onto [0, n) without a division
       (Lemire's fastrange): n need not be a power of two. */
    static inline uint64_t elig_slot(uint64_t key, uint64_t n) {
        uint64_t h = key * 0x9E3779B97F4A7C15ULL;
        return (uint64_t)(((unsigned __int128)h * n) >> 64);
    }
    static inline void elig_prefetch(const void *p) { __builtin_prefetch(p, 0, 1); }
    """
    uint64_t elig_slot(uint64_t key, uint64_t n) nogil
    void elig_prefetch(const void *p) nogil

# The contract's values (contract.domain, contract.days, contract.snapshot);
# tests/test_kernel.py checks they agree.
DEF DAY_NONE = 0xFFFF
DEF MAX_DAY = 0xFFFE
DEF DAY_BITS = 16
DEF ST_ACTIVE = 1
DEF ST_WARNED = 2
DEF ST_SUSPENDED = 3
DEF ST_TERMINATED = 4
DEF ST_NOT_REGISTERED = 5
DEF D_PAY = 1
DEF D_REJECT = 2
DEF D_OVERRIDE = 3
DEF R_OK = 1
DEF R_WARNED = 2
DEF R_INVALID_CODE = 3
DEF R_NOT_REGISTERED = 4
DEF R_NOT_AT_INSTITUTION = 5
DEF R_SUSPENDED = 6
DEF R_TERMINATED = 7
DEF R_PRINCIPAL = 8
DEF N_REASONS = 9
DEF N_DECISIONS = 4
DEF MAX_CLAIM_ID_CHARS = 128
DEF KEY_MALFORMED = -1
DEF KEY_EMPTY = -2
DEF N_LINE_BUCKETS = 11   # gateway.ops.metrics.LINES_BUCKETS + the +Inf bucket

# Packed record flags (the top byte of a record's first word; keys < 2**50).
DEF SIMPLE = 1      # one registration and no status change: word 1 holds it
DEF FLAG_SHIFT = 56
DEF BLOCK = 32  # lines whose index reads are issued together (IndexView.lookup_lines)

cdef uint64_t KEY_MASK = 0x00FFFFFFFFFFFFFFULL
cdef uint64_t LOW32 = 0xFFFFFFFFULL
cdef int64_t INT64_MAX = 0x7FFFFFFFFFFFFFFFLL
cdef uint64_t NO_STATUS = 0xFFFFFFFFULL  # in a record: no status change point
cdef uint64_t MAX_TAG = 0xFFFFFFFFULL
cdef int64_t P_SCALE = 1000000000000LL  # 10**12: contract.codes
cdef int64_t I_SCALE = 100000000000LL  # 10**11

PUNT = 1
INVALID = 2

CHANNEL_HOSPITAL = 1
CHANNEL_PHARMACY = 2


cdef struct Found:
    bint registered
    bint at_inst
    uint8_t status
    uint16_t until


cdef struct Line:
    const uint8_t *line_id
    Py_ssize_t line_id_len
    int64_t key
    int32_t service_date
    bint emergency
    int64_t amount_fen
    int day
    const uint64_t *rec  # the practitioner's record, NULL if unknown
    bint in_overlay  # rec is the overlay's
    Found found


def _zeroed_table(Py_ssize_t words):
    """A zeroed uint64 array; a large one on transparent huge pages where the
    kernel allows it (fewer TLB misses on random reads: 2 MiB pages)."""
    if words * 8 < (4 << 20):
        return np.zeros(words, dtype=np.uint64)
    memory = mmap.mmap(-1, words * 8, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        memory.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):  # not Linux, or THP off: ordinary pages
        pass
    return np.frombuffer(memory, dtype=np.uint64)


def _check_table(table, Py_ssize_t words, Py_ssize_t n, Py_ssize_t n_inst, Py_ssize_t n_st):
    """Refuse a table that does not fit its arrays: every record's key slot
    used once per practitioner, every institution, row and status position in
    range (a damaged shared file must not make a lookup read out of bounds)."""
    if table.dtype != np.uint64 or table.ndim != 1 or len(table) != words:
        raise ValueError(f"packed table: {table.dtype}[{len(table)}], expected uint64[{words}]")
    w0 = table[0::2]
    w1 = table[1::2]
    used = w0 != 0
    if int(np.count_nonzero(used)) != n:
        raise ValueError("packed table: not one record per practitioner")
    flags = w0[used] >> np.uint64(FLAG_SHIFT)
    low = w1[used] & np.uint64(0xFFFFFFFF)
    high = w1[used] >> np.uint64(32)
    simple = flags == SIMPLE
    if np.any((flags != 0) & ~simple):
        raise ValueError("packed table: unknown record flags")
    if np.any(simple & (low >= np.uint64(max(n_inst, 1)))):
        raise ValueError("packed table: an institution out of range")
    complex_ = ~simple
    if np.any(complex_ & (low >= np.uint64(n))):
        raise ValueError("packed table: a row out of range")
    if np.any(complex_ & (high != np.uint64(0xFFFFFFFF)) & (high >= np.uint64(n_st))):
        raise ValueError("packed table: a status position out of range")


cdef class PackedIndex:
    """One snapshot's (or one overlay's) arrays, and a hash table of packed
    per-practitioner records over them.

    Record (16 bytes): word 0 = key | flags << 56; word 1 = for a SIMPLE
    practitioner the registration itself (institution id | from << 32 |
    until << 48), otherwise the practitioner's row in the arrays | the
    position of its first status change point << 32 (NO_STATUS if none).
    Empty slots hold 0 (no key is 0). Linear probing at a load of at most
    2/3: a found key takes 1.5 probes on average, mostly in one cache line.
    """

    cdef readonly object arrays
    cdef const uint64_t[::1] codes
    cdef const uint32_t[::1] reg_offsets
    cdef const uint32_t[::1] reg_inst
    cdef const uint16_t[::1] reg_from
    cdef const uint16_t[::1] reg_until
    cdef const uint64_t[::1] inst_codes
    cdef const uint64_t[::1] st_key
    cdef const uint8_t[::1] st_status
    cdef const uint16_t[::1] st_until
    cdef object _table
    cdef uint64_t *table
    cdef uint64_t nslots
    cdef Py_ssize_t n, n_inst, n_st

    def __init__(self, arrays, table=None):
        """``arrays``: a snapshot's arrays that passed ``contract.snapshot.validate_arrays``;
        ``table``: the table another PackedIndex of the same arrays built
        (``.table_words``: the workers of a gateway share one, gateway.ops.shared_index),
        checked so that no record can point outside the arrays."""
        self.arrays = arrays
        self.codes = arrays["prac_codes"]
        self.reg_offsets = arrays["reg_offsets"]
        self.reg_inst = arrays["reg_inst"]
        self.reg_from = arrays["reg_from"]
        self.reg_until = arrays["reg_until"]
        self.inst_codes = arrays["inst_codes"]
        self.st_key = arrays["st_key"]
        self.st_status = arrays["st_status"]
        self.st_until = arrays["st_until"]
        self.n = self.codes.shape[0]
        self.n_inst = self.inst_codes.shape[0]
        self.n_st = self.st_key.shape[0]
        self.nslots = <uint64_t>(self.n + self.n // 2 + 8)
        cdef const uint64_t[::1] view
        if table is not None:
            _check_table(table, 2 * self.nslots, self.n, self.n_inst, self.n_st)
            self._table = table
            view = table
            self.table = <uint64_t *>&view[0]  # read only from here on
            return
        self._table = _zeroed_table(2 * self.nslots)
        view = self._table
        self.table = <uint64_t *>&view[0]
        self._build()

    @property
    def table_words(self):
        """The hash table (uint64 words, two per slot), to share with other processes."""
        return self._table

    @property
    def nbytes(self):
        """Bytes of the hash table (the arrays are the snapshot's)."""
        return int(self._table.nbytes)

    cdef void _build(self):
        cdef Py_ssize_t row, s
        cdef uint64_t key, slot, w0, w1, count, last_row
        cdef uint64_t *table = self.table
        cdef uint32_t *st_first = <uint32_t *> malloc((self.n + 1) * sizeof(uint32_t))
        if st_first == NULL:
            raise MemoryError()
        try:
            for row in range(self.n):
                st_first[row] = NO_STATUS
            for s in range(self.n_st - 1, -1, -1):
                st_first[self.st_key[s] >> DAY_BITS] = <uint32_t>s
            with nogil:
                for row in range(self.n):
                    key = self.codes[row]
                    count = self.reg_offsets[row + 1] - self.reg_offsets[row]
                    if count == 1 and st_first[row] == NO_STATUS:
                        s = self.reg_offsets[row]
                        w0 = key | (<uint64_t>SIMPLE << FLAG_SHIFT)
                        w1 = (<uint64_t>self.reg_inst[s]
                              | (<uint64_t>self.reg_from[s] << 32)
                              | (<uint64_t>self.reg_until[s] << 48))
                    else:
                        w0 = key
                        w1 = <uint64_t>row | (<uint64_t>st_first[row] << 32)
                    slot = elig_slot(key, self.nslots)
                    while table[2 * slot] != 0:
                        slot += 1
                        if slot == self.nslots:
                            slot = 0
                    table[2 * slot] = w0
                    table[2 * slot + 1] = w1
        finally:
            free(st_first)

    cdef inline Py_ssize_t institution_id(self, uint64_t key) noexcept nogil:
        """Row of an institution key in inst_codes, -1 if no one is registered there."""
        cdef Py_ssize_t lo = 0, hi = self.n_inst, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.inst_codes[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.n_inst and self.inst_codes[lo] == key:
            return lo
        return -1

    cdef inline const uint64_t *find(self, uint64_t key) noexcept nogil:
        """The record of ``key``, NULL if unknown."""
        if self.n == 0:
            return NULL
        cdef uint64_t slot = elig_slot(key, self.nslots)
        cdef uint64_t w0
        while True:
            w0 = self.table[2 * slot]
            if w0 == 0:
                return NULL
            if (w0 & KEY_MASK) == key:
                return &self.table[2 * slot]
            slot += 1
            if slot == self.nslots:
                slot = 0

    cdef inline const void *slot_address(self, uint64_t key) noexcept nogil:
        return &self.table[2 * elig_slot(key, self.nslots)] if self.n else NULL

    cdef void lookup(self, const uint64_t *rec, uint16_t day, Py_ssize_t inst,
                     Found *out) noexcept nogil:
        """gateway.index.StatusIndex.lookup_line for the practitioner of ``rec``."""
        cdef uint64_t w1 = rec[1], row, query, first
        cdef uint16_t start, end
        cdef Py_ssize_t i
        out.registered = False
        out.at_inst = False
        out.status = ST_ACTIVE
        out.until = DAY_NONE
        if (rec[0] >> FLAG_SHIFT) & SIMPLE:
            start = <uint16_t>(w1 >> 32)
            end = <uint16_t>(w1 >> 48)
            if start <= day and (end == DAY_NONE or day < end):
                out.registered = True
                out.at_inst = <Py_ssize_t>(w1 & MAX_TAG) == inst
            else:
                out.status = ST_NOT_REGISTERED
            return
        row = w1 & LOW32
        for i in range(self.reg_offsets[row], self.reg_offsets[row + 1]):
            end = self.reg_until[i]
            if self.reg_from[i] <= day and (end == DAY_NONE or day < end):
                out.registered = True
                if <Py_ssize_t>self.reg_inst[i] == inst:
                    out.at_inst = True
                    break
        # The last status change point at or before (row, day): the row's
        # points are consecutive in st_key, in day order, from the first.
        first = w1 >> 32
        if first != NO_STATUS:
            query = (row << DAY_BITS) | day
            i = <Py_ssize_t>first
            if self.st_key[i] <= query:
                while i + 1 < self.n_st and self.st_key[i + 1] <= query:
                    i += 1
                out.status = self.st_status[i]
                out.until = self.st_until[i]
        if not out.registered and out.status != ST_SUSPENDED and out.status != ST_TERMINATED:
            out.status = ST_NOT_REGISTERED


cdef class IndexView:
    """What one request decides against: a snapshot's PackedIndex, the packed
    overlay of live changes read first (or None), and the index version."""

    cdef readonly PackedIndex base
    cdef readonly object overlay
    cdef PackedIndex _overlay
    cdef readonly uint64_t version

    def __init__(self, PackedIndex base, PackedIndex overlay, uint64_t version):
        self.base = base
        self.overlay = overlay
        self._overlay = overlay
        self.version = version

    cdef inline void lookup(self, uint64_t key, uint16_t day, uint64_t inst_key,
                            Py_ssize_t base_inst, Found *out) noexcept nogil:
        """LayeredIndex.lookup_line(row_of(key), day, institution_id(inst_key))."""
        cdef const uint64_t *rec
        if self._overlay is not None:
            rec = self._overlay.find(key)
            if rec != NULL:
                self._overlay.lookup(rec, day, self._overlay.institution_id(inst_key), out)
                return
        rec = self.base.find(key)
        if rec != NULL:
            self.base.lookup(rec, day, base_inst, out)
            return
        out.registered = False
        out.at_inst = False
        out.status = ST_NOT_REGISTERED
        out.until = DAY_NONE

    cdef void lookup_lines(self, Line *lines, Py_ssize_t n, uint64_t inst_key,
                           Py_ssize_t base_inst) noexcept:
        """``lookup`` of every line into its ``found``, in blocks of BLOCK lines
        whose memory reads are issued together (prefetched) instead of one
        cache miss after another: the national index is far larger than the
        caches, and a line's record, registrations and status points are
        random reads (a 100,000-line claim: bench/test_micro.py)."""
        cdef PackedIndex base = self.base
        cdef PackedIndex overlay = self._overlay
        cdef Py_ssize_t overlay_inst = overlay.institution_id(inst_key) if overlay is not None else -1
        cdef Py_ssize_t start, end, j
        cdef Line *line
        cdef const uint64_t *rec
        cdef uint64_t row, first, off
        for start in range(0, n, BLOCK):
            end = start + BLOCK if start + BLOCK < n else n
            for j in range(start, end):  # 1: the records' slots
                if lines[j].key >= 0:
                    elig_prefetch(base.slot_address(<uint64_t>lines[j].key))
            for j in range(start, end):  # 2: the records; a complex one's offsets and statuses
                line = &lines[j]
                line.rec = NULL
                line.in_overlay = False
                if line.key < 0:
                    continue
                if overlay is not None:
                    rec = overlay.find(<uint64_t>line.key)
                    if rec != NULL:
                        line.rec = rec
                        line.in_overlay = True
                        continue
                rec = base.find(<uint64_t>line.key)
                line.rec = rec
                if rec != NULL and not ((rec[0] >> FLAG_SHIFT) & SIMPLE):
                    row = rec[1] & LOW32
                    elig_prefetch(&base.reg_offsets[row])
                    first = rec[1] >> 32
                    if first != NO_STATUS:
                        elig_prefetch(&base.st_key[first])
                        elig_prefetch(&base.st_status[first])
                        elig_prefetch(&base.st_until[first])
            for j in range(start, end):  # 3: a complex one's registrations
                rec = lines[j].rec
                if rec != NULL and not lines[j].in_overlay and not ((rec[0] >> FLAG_SHIFT) & SIMPLE):
                    off = base.reg_offsets[rec[1] & LOW32]
                    elig_prefetch(&base.reg_from[off])
                    elig_prefetch(&base.reg_until[off])
                    elig_prefetch(&base.reg_inst[off])
            for j in range(start, end):  # 4: the lookups, from the caches
                line = &lines[j]
                if line.key < 0:
                    line.found.registered = False
                    line.found.at_inst = False
                    line.found.status = 0  # UNSPECIFIED: no valid code
                    line.found.until = DAY_NONE
                elif line.rec == NULL:
                    line.found.registered = False
                    line.found.at_inst = False
                    line.found.status = ST_NOT_REGISTERED
                    line.found.until = DAY_NONE
                elif line.in_overlay:
                    overlay.lookup(line.rec, <uint16_t>line.day, overlay_inst, &line.found)
                else:
                    base.lookup(line.rec, <uint16_t>line.day, base_inst, &line.found)


# ---------------------------------------------------------------------------
# Dates: int32 YYYYMMDD <-> days since 1970-01-01 (contract.days), by
# H. Hinnant's civil-date algorithms (http://howardhinnant.github.io/date_algorithms.html).

cdef inline int64_t days_from_civil(int64_t y, int64_t m, int64_t d) noexcept nogil:
    y -= m <= 2
    cdef int64_t era = (y if y >= 0 else y - 399) // 400
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int32_t yyyymmdd_of(int64_t z) noexcept nogil:
    z += 719468
    cdef int64_t era = (z if z >= 0 else z - 146096) // 146097
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t y = yoe + era * 400
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    cdef int64_t d = doy - (153 * mp + 2) // 5 + 1
    cdef int64_t m = mp + (3 if mp < 10 else -9)
    return <int32_t>((y + (m <= 2)) * 10000 + m * 100 + d)


cdef inline int day_of(int32_t value, int today) noexcept nogil:
    """The day of a YYYYMMDD service date that is real, stored and not in the
    future; -1 otherwise (gateway.claims.parse_day refuses it)."""
    if value <= 0:
        return -1
    cdef int64_t y = value // 10000, m = (value // 100) % 100, d = value % 100
    if m < 1 or m > 12 or d < 1 or y < 1970 or y > 2149:
        return -1
    cdef int64_t dim = 31
    if m == 4 or m == 6 or m == 9 or m == 11:
        dim = 30
    elif m == 2:
        dim = 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if d > dim:
        return -1
    cdef int64_t day = days_from_civil(y, m, d)
    if day < 0 or day > MAX_DAY or day > today:
        return -1
    return <int>day


def day_to_yyyymmdd(int day):
    """contract.days.day_to_yyyymmdd, as the compiled path computes it (tests)."""
    return yyyymmdd_of(day)


def yyyymmdd_to_day(int32_t value, int today):
    """The day of ``value``, -1 where gateway.claims.parse_day refuses it (tests)."""
    return day_of(value, today)


# ---------------------------------------------------------------------------
# Codes (contract.codes)

cdef inline int64_t practitioner_key(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """contract.codes.try_encode_practitioner; KEY_EMPTY for an empty code."""
    if n == 0:
        return KEY_EMPTY
    if n != 13 and n != 14:
        return KEY_MALFORMED
    cdef Py_ssize_t letters = n - 12, i
    cdef int64_t l1, l2 = 0, digits = 0
    for i in range(letters):
        if p[i] < 65 or p[i] > 90:
            return KEY_MALFORMED
    for i in range(letters, n):
        if p[i] < 48 or p[i] > 57:
            return KEY_MALFORMED
        digits = digits * 10 + (p[i] - 48)
    l1 = p[0] - 64
    if letters == 2:
        l2 = p[1] - 64
    return (27 * l1 + l2) * P_SCALE + digits


cdef inline int64_t institution_key(const uint8_t *p, Py_ssize_t n) noexcept nogil:
    """contract.codes.encode_institution; -1 for a malformed code."""
    if n != 12 or p[0] < 65 or p[0] > 90:
        return -1
    cdef int64_t digits = 0
    cdef Py_ssize_t i
    for i in range(1, 12):
        if p[i] < 48 or p[i] > 57:
            return -1
        digits = digits * 10 + (p[i] - 48)
    return (p[0] - 64) * I_SCALE + digits


# ---------------------------------------------------------------------------
# Wire format (https://protobuf.dev/programming-guides/encoding/): what
# protobuf's own parser (upb) accepts, read the way it reads it: the last of
# a repeated scalar field wins; a known field with another wire type is an
# unknown field; unknown fields are skipped. Anything else is PUNTed.

cdef struct Reader:
    const uint8_t *p
    const uint8_t *end
    bint bad


cdef inline uint64_t read_varint(Reader *r) noexcept nogil:
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef uint8_t b
    while r.p < r.end:
        b = r.p[0]
        r.p += 1
        if shift == 63 and b > 1:
            r.bad = True  # more than 64 bits: upb refuses it
            return 0
        value |= <uint64_t>(b & 0x7F) << shift
        if b < 0x80:
            return value
        shift += 7
        if shift > 63:
            r.bad = True
            return 0
    r.bad = True
    return 0


cdef inline uint64_t read_short_varint(Reader *r) noexcept nogil:
    """A tag or a length: upb refuses one written in more than 5 bytes."""
    cdef const uint8_t *start = r.p
    cdef uint64_t value = read_varint(r)
    if r.p - start > 5:
        r.bad = True
    return value


cdef inline bint skip_field(Reader *r, uint32_t wire) noexcept nogil:
    """Skip an unknown field's value; False (and PUNT) for groups and bad types."""
    cdef uint64_t n
    if wire == 0:
        read_varint(r)
    elif wire == 1:
        if r.end - r.p < 8:
            r.bad = True
        r.p += 8
    elif wire == 2:
        n = read_short_varint(r)
        if r.bad or n > <uint64_t>(r.end - r.p):
            r.bad = True
            return False
        r.p += n
    elif wire == 5:
        if r.end - r.p < 4:
            r.bad = True
        r.p += 4
    else:
        r.bad = True
    return not r.bad


cdef inline bint read_bytes(Reader *r, const uint8_t **p, Py_ssize_t *n) noexcept nogil:
    cdef uint64_t length = read_short_varint(r)
    if r.bad or length > <uint64_t>(r.end - r.p):
        r.bad = True
        return False
    p[0] = r.p
    n[0] = <Py_ssize_t>length
    r.p += length
    return True


cdef inline bint valid_utf8(const uint8_t *s, Py_ssize_t n) noexcept nogil:
    """RFC 3629 UTF-8 (no surrogates, no overlongs, at most U+10FFFF), as upb checks."""
    cdef Py_ssize_t i = 0
    cdef uint8_t c, c1
    while i < n:
        c = s[i]
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:
            return False
        if c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
            continue
        if i + 1 >= n:
            return False
        c1 = s[i + 1]
        if c < 0xF0:
            if i + 2 >= n or (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80:
                return False
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F):
                return False
            i += 3
            continue
        if i + 3 >= n or (c1 & 0xC0) != 0x80 or (s[i + 2] & 0xC0) != 0x80 \
                or (s[i + 3] & 0xC0) != 0x80:
            return False
        if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F):
            return False
        i += 4
    return True


cdef inline Py_ssize_t utf8_chars(const uint8_t *s, Py_ssize_t n) noexcept nogil:
    """Code points in valid UTF-8: the bytes that do not continue a character."""
    cdef Py_ssize_t i, count = 0
    for i in range(n):
        if (s[i] & 0xC0) != 0x80:
            count += 1
    return count


cdef inline bint parse_line(const uint8_t *p, Py_ssize_t n, Line *line) noexcept nogil:
    """One ClaimLine; False: PUNT."""
    cdef Reader r
    cdef uint64_t tag
    cdef uint32_t field, wire
    cdef const uint8_t *s = NULL
    cdef Py_ssize_t sn = 0
    cdef const uint8_t *code = NULL
    cdef Py_ssize_t code_len = 0
    r.p = p
    r.end = p + n
    r.bad = False
    line.line_id = NULL
    line.line_id_len = 0
    line.service_date = 0
    line.emergency = False
    line.amount_fen = 0
    while r.p < r.end:
        tag = read_short_varint(&r)
        if r.bad or tag > MAX_TAG:
            return False
        field = <uint32_t>(tag >> 3)
        wire = <uint32_t>(tag & 7)
        if field == 0:
            return False
        if wire == 2 and (field == 1 or field == 2 or field == 5):
            if not read_bytes(&r, &s, &sn) or not valid_utf8(s, sn):
                return False
            if field == 1:
                line.line_id = s
                line.line_id_len = sn
            elif field == 2:
                code = s
                code_len = sn
        elif wire == 0 and field == 3:
            line.service_date = <int32_t>read_varint(&r)
        elif wire == 0 and field == 4:
            line.emergency = read_varint(&r) != 0
        elif wire == 0 and field == 6:
            line.amount_fen = <int64_t>read_varint(&r)
        elif not skip_field(&r, wire):
            return False
        if r.bad:
            return False
    line.key = practitioner_key(code, code_len)
    return True


# ---------------------------------------------------------------------------
# Output

cdef inline Py_ssize_t varint_size(uint64_t v) noexcept nogil:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline uint8_t *put_varint(uint8_t *out, uint64_t v) noexcept nogil:
    while v >= 0x80:
        out[0] = <uint8_t>(v & 0x7F) | 0x80
        v >>= 7
        out += 1
    out[0] = <uint8_t>v
    return out + 1


cdef inline uint8_t *put_bytes(uint8_t *out, uint8_t tag, const uint8_t *s, Py_ssize_t n) noexcept nogil:
    out[0] = tag
    out = put_varint(out + 1, <uint64_t>n)
    memcpy(out, s, n)
    return out + n


cdef class ClaimKernel:
    """The compiled claim path with its policy, limits and counters."""

    cdef readonly bint check_registered_at_institution
    cdef readonly bint emergency_covers_terminated
    cdef readonly Py_ssize_t max_lines
    # Counters, exported at scrape time (gateway.ops.metrics.ClaimMetrics).
    cdef readonly object lines_decided    # int64[2, N_DECISIONS * N_REASONS]
    cdef readonly object rejected_fen     # int64[2, N_REASONS]
    cdef readonly object claim_buckets    # int64[2, N_LINE_BUCKETS] (not cumulative)
    cdef readonly object claim_lines_sum  # int64[2]
    cdef int64_t[:, ::1] _lines_decided
    cdef int64_t[:, ::1] _rejected_fen
    cdef int64_t[:, ::1] _claim_buckets
    cdef int64_t[::1] _claim_lines_sum
    cdef Line *lines
    cdef Py_ssize_t lines_cap
    cdef uint8_t *out
    cdef Py_ssize_t out_cap

    def __init__(self, *, bint check_registered_at_institution=True,
                 bint emergency_covers_terminated=True, Py_ssize_t max_lines=1000):
        self.check_registered_at_institution = check_registered_at_institution
        self.emergency_covers_terminated = emergency_covers_terminated
        self.max_lines = max_lines
        self.lines_decided = np.zeros((2, N_DECISIONS * N_REASONS), dtype=np.int64)
        self.rejected_fen = np.zeros((2, N_REASONS), dtype=np.int64)
        self.claim_buckets = np.zeros((2, N_LINE_BUCKETS), dtype=np.int64)
        self.claim_lines_sum = np.zeros(2, dtype=np.int64)
        self._lines_decided = self.lines_decided
        self._rejected_fen = self.rejected_fen
        self._claim_buckets = self.claim_buckets
        self._claim_lines_sum = self.claim_lines_sum

    def __dealloc__(self):
        free(self.lines)
        free(self.out)

    cdef int _reserve(self, Py_ssize_t n_lines, Py_ssize_t out_bytes) except -1:
        cdef void *grown
        if n_lines > self.lines_cap:
            grown = realloc(self.lines, n_lines * sizeof(Line))
            if grown == NULL:
                raise MemoryError()
            self.lines = <Line *>grown
            self.lines_cap = n_lines
        if out_bytes > self.out_cap:
            grown = realloc(self.out, out_bytes)
            if grown == NULL:
                raise MemoryError()
            self.out = <uint8_t *>grown
            self.out_cap = out_bytes
        return 0

    def check(self, IndexView view, bytes data, int today):
        """Decide one CheckClaimRequest (see the module's docstring)."""
        cdef const uint8_t *p = <const uint8_t *>PyBytes_AS_STRING(data)
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        cdef Reader r
        cdef uint64_t tag
        cdef uint32_t field, wire
        cdef const uint8_t *s = NULL
        cdef Py_ssize_t sn = 0
        cdef const uint8_t *claim_id = NULL
        cdef Py_ssize_t claim_id_len = 0
        cdef const uint8_t *inst = NULL
        cdef Py_ssize_t inst_len = 0
        cdef const uint8_t *principal = NULL
        cdef Py_ssize_t principal_len = 0
        cdef int32_t channel = 0, service_date = 0
        cdef Py_ssize_t n_lines = 0, i

        # Pass 1: the claim's fields; the lines' spans are counted.
        r.p = p
        r.end = p + size
        r.bad = False
        while r.p < r.end:
            tag = read_short_varint(&r)
            if r.bad or tag > MAX_TAG:
                return PUNT
            field = <uint32_t>(tag >> 3)
            wire = <uint32_t>(tag & 7)
            if field == 0:
                return PUNT
            if wire == 2 and field <= 6 and field != 3 and field != 5:
                if not read_bytes(&r, &s, &sn):
                    return PUNT
                if field == 6:
                    n_lines += 1
                    continue
                if not valid_utf8(s, sn):
                    return PUNT
                if field == 1:
                    claim_id = s
                    claim_id_len = sn
                elif field == 2:
                    inst = s
                    inst_len = sn
                else:
                    principal = s
                    principal_len = sn
            elif wire == 0 and field == 3:
                channel = <int32_t>read_varint(&r)
            elif wire == 0 and field == 5:
                service_date = <int32_t>read_varint(&r)
            elif not skip_field(&r, wire):
                return PUNT
            if r.bad:
                return PUNT

        # The claim (gateway.claims.parse_claim's checks, in any order: the
        # message naming the first failing field is written by gateway.claims).
        if claim_id_len == 0 or (
            claim_id_len > MAX_CLAIM_ID_CHARS
            and utf8_chars(claim_id, claim_id_len) > MAX_CLAIM_ID_CHARS
        ):
            return INVALID
        if channel != CHANNEL_HOSPITAL and channel != CHANNEL_PHARMACY:
            return INVALID
        cdef bint pharmacy = channel == CHANNEL_PHARMACY
        cdef int64_t inst_key = institution_key(inst, inst_len)
        if inst_key < 0 or inst[0] != (80 if pharmacy else 72):  # 'P' / 'H'
            return INVALID
        if n_lines == 0 or n_lines > self.max_lines:
            return INVALID
        cdef int claim_day = -1
        if service_date != 0:
            claim_day = day_of(service_date, today)
            if claim_day < 0:
                return INVALID
        cdef int64_t principal_key = -1
        if pharmacy:
            principal_key = practitioner_key(principal, principal_len)
            if principal_key < 0 or claim_day < 0:
                return INVALID

        # Pass 2: the lines.
        self._reserve(n_lines, size + 24 * n_lines + 64)
        cdef Line *lines = self.lines
        cdef Line *line
        # Lines mostly share a few dates: each is converted once (a small
        # direct-mapped cache; 0 is never a key, it means "the claim's date").
        cdef int32_t seen_date[64]
        cdef int seen_day[64]
        cdef int slot
        for i in range(64):
            seen_date[i] = 0
        r.p = p
        r.bad = False
        i = 0
        while r.p < r.end:
            tag = read_short_varint(&r)
            field = <uint32_t>(tag >> 3)
            wire = <uint32_t>(tag & 7)
            if field == 6 and wire == 2:
                read_bytes(&r, &s, &sn)
                line = &lines[i]
                if not parse_line(s, sn, line):
                    return PUNT
                if line.service_date == 0:
                    if claim_day < 0:
                        return INVALID
                    line.day = claim_day
                else:
                    slot = line.service_date & 63
                    if seen_date[slot] == line.service_date:
                        line.day = seen_day[slot]
                    else:
                        line.day = day_of(line.service_date, today)
                        if line.day < 0:
                            return INVALID
                        seen_date[slot] = line.service_date
                        seen_day[slot] = line.day
                if line.amount_fen < 0:
                    return INVALID
                i += 1
            else:
                skip_field(&r, wire)

        # Decide and write.
        cdef Py_ssize_t base_inst = view.base.institution_id(<uint64_t>inst_key)
        cdef Found found
        cdef bint principal_ok = False
        if pharmacy:
            view.lookup(<uint64_t>principal_key, <uint16_t>claim_day, <uint64_t>inst_key,
                        base_inst, &found)
            principal_ok = (found.at_inst and found.status != ST_SUSPENDED
                            and found.status != ST_TERMINATED)

        cdef uint8_t *out = self.out
        cdef uint8_t *o = out
        cdef uint8_t *body
        cdef uint8_t decision, reason, status
        cdef uint16_t until
        cdef int32_t status_until
        cdef Py_ssize_t body_len, rejected = 0, ch = 1 if pharmacy else 0
        cdef list overrides = None
        cdef bint covers_terminated = self.emergency_covers_terminated
        cdef bint check_at_inst = self.check_registered_at_institution and not pharmacy
        cdef int64_t key

        view.lookup_lines(lines, n_lines, <uint64_t>inst_key, base_inst)
        o = put_bytes(o, 0x0A, claim_id, claim_id_len)
        for i in range(n_lines):
            line = &lines[i]
            key = line.key
            found = line.found
            status = found.status
            until = found.until
            # SPEC §4, rules 1-6, the first that applies decides.
            if pharmacy and not principal_ok:
                decision, reason = D_REJECT, R_PRINCIPAL
            elif key < 0:
                if key == KEY_EMPTY and pharmacy:
                    decision, reason = D_PAY, R_OK
                else:
                    decision, reason = D_REJECT, R_INVALID_CODE
            elif not found.registered:
                decision, reason = D_REJECT, R_NOT_REGISTERED
            elif check_at_inst and not found.at_inst:
                decision, reason = D_REJECT, R_NOT_AT_INSTITUTION
            elif status == ST_SUSPENDED or status == ST_TERMINATED:
                reason = R_SUSPENDED if status == ST_SUSPENDED else R_TERMINATED
                if line.emergency and (status == ST_SUSPENDED or covers_terminated):
                    decision = D_OVERRIDE
                    if overrides is None:
                        overrides = []
                    overrides.append((i, line.day, reason))
                else:
                    decision = D_REJECT
            elif status == ST_WARNED:
                decision, reason = D_PAY, R_WARNED
            else:
                decision, reason = D_PAY, R_OK
            status_until = 0
            if status == ST_SUSPENDED and until != DAY_NONE:
                status_until = yyyymmdd_of(until)

            # LineDecision {1: line_id, 2: decision, 3: reason, 4: status, 5: status_until}
            body_len = 4
            if line.line_id_len:
                body_len += 1 + varint_size(<uint64_t>line.line_id_len) + line.line_id_len
            if status:
                body_len += 2
            if status_until:
                body_len += 1 + varint_size(<uint64_t>status_until)
            o[0] = 0x12
            o = put_varint(o + 1, <uint64_t>body_len)
            if line.line_id_len:
                o = put_bytes(o, 0x0A, line.line_id, line.line_id_len)
            o[0] = 0x10
            o[1] = decision
            o[2] = 0x18
            o[3] = reason
            o += 4
            if status:
                o[0] = 0x20
                o[1] = status
                o += 2
            if status_until:
                o[0] = 0x28
                o = put_varint(o + 1, <uint64_t>status_until)

            self._lines_decided[ch, decision * N_REASONS + reason] += 1
            if decision == D_REJECT:
                rejected += 1
                # Saturating: a counter must never wrap (amounts up to 2**63 - 1 each).
                if line.amount_fen > INT64_MAX - self._rejected_fen[ch, reason]:
                    self._rejected_fen[ch, reason] = INT64_MAX
                else:
                    self._rejected_fen[ch, reason] += line.amount_fen
        if view.version:
            o[0] = 0x18
            o = put_varint(o + 1, view.version)
        if rejected:
            o[0] = 0x20
            o = put_varint(o + 1, <uint64_t>rejected)

        self._claim_buckets[ch, bucket_of(n_lines)] += 1
        self._claim_lines_sum[ch] += n_lines
        response = PyBytes_FromStringAndSize(<char *>out, o - out)
        if overrides is not None:
            return response, overrides
        return response


cdef inline Py_ssize_t bucket_of(Py_ssize_t n) noexcept nogil:
    """Index of n's bucket in gateway.ops.metrics.LINES_BUCKETS (1 2 5 10 20 50 100 200 500 1000 +Inf)."""
    if n <= 1:
        return 0
    if n <= 2:
        return 1
    if n <= 5:
        return 2
    if n <= 10:
        return 3
    if n <= 20:
        return 4
    if n <= 50:
        return 5
    if n <= 100:
        return 6
    if n <= 200:
        return 7
    if n <= 500:
        return 8
    if n <= 1000:
        return 9
    return 10
