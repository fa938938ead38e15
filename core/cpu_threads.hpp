// How many threads the CPU backend's parallel regions use: the cores other programs leave free.
//
// On a 2-core laptop a browser or a video call often keeps one core busy. An OpenMP team of two
// then has one thread sharing a core with that program: it runs half the time, in slices of a
// few milliseconds, and every parallel region (a decode step has dozens) waits at its closing
// barrier for the thread that is not running. Measured here with one busy core beside it, two
// threads trained at half the speed of one. So before each parallel operation the backend asks
// adapt_cpu_threads(), which every ~50 ms compares the machine's busy time (/proc/stat) with this
// process's own (getrusage) and sizes the team to the cores the others leave free.
#pragma once

namespace moelab {

// Sets the calling thread's OpenMP team size (omp_set_num_threads, which Eigen's products read
// too) to the cores left free by other programs: at least 1, at most the team size the thread had
// before (OMP_NUM_THREADS, or what the application set). Cheap: one clock read between refreshes.
// MOELAB_ADAPTIVE_THREADS=0 in the environment turns it off (the team keeps its size).
// Returns the team size now in force.
int adapt_cpu_threads();

// The last estimate: cores kept busy by other programs, averaged over the last window (0 before
// the first window has passed).
double cpu_busy_elsewhere();

}  // namespace moelab
