# OpenMP team sizes, shared by the kernels that split their work over threads.
#
# A threaded kernel computes every output element on one thread, adding its terms in the
# order the serial loop adds them, so its results do not depend on the number of threads;
# built without OpenMP (setup.py probes the compiler) its loops run on one thread.

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define COVERAGE_OMP_MAX_THREADS() omp_get_max_threads()
    #define COVERAGE_OMP_BARRIER() _Pragma("omp barrier")
    #define COVERAGE_OPENMP 1
    #else
    #define COVERAGE_OMP_MAX_THREADS() 1
    #define COVERAGE_OMP_BARRIER() ((void)0)
    #define COVERAGE_OPENMP 0
    #endif
    """
    # OpenMP's team size for the calling thread (OMP_NUM_THREADS, omp_set_num_threads,
    # threadpoolctl; the machine's cores by default); 1 without OpenMP
    int omp_max_threads "COVERAGE_OMP_MAX_THREADS"() noexcept nogil
    # every thread of the team waits here for the others (Cython's prange loops inside a
    # parallel block end without one: "omp for nowait"); call it at the block's level, where
    # every thread passes
    void barrier "COVERAGE_OMP_BARRIER"() noexcept nogil
    # 1 when compiled with OpenMP
    int OPENMP_BUILD "COVERAGE_OPENMP"


cdef inline int team_size(int forced, Py_ssize_t work, Py_ssize_t min_work) noexcept nogil:
    # threads for a call: 1 below min_work units of work; else the module's forced count
    # (set_threads) or OpenMP's
    cdef int n
    if work < min_work:
        return 1
    n = forced if forced > 0 else omp_max_threads()
    return n if n > 1 else 1
