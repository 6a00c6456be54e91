# Software prefetch, shared by the kernels that read memory in data-dependent order.

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define COVERAGE_PREFETCH(p) __builtin_prefetch(p)
    #define COVERAGE_PREFETCH_W(p) __builtin_prefetch((p), 1)
    #else
    #define COVERAGE_PREFETCH(p) ((void)0)
    #define COVERAGE_PREFETCH_W(p) ((void)0)
    #endif
    """
    # bring the cache line holding p closer (for reading; prefetch_w: for writing)
    void prefetch "COVERAGE_PREFETCH"(const void* p) noexcept nogil
    void prefetch_w "COVERAGE_PREFETCH_W"(const void* p) noexcept nogil
