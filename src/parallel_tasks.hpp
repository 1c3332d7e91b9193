// A fixed set of tasks run on the calling thread and a few threads started for them. Private
// header.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <new>
#include <system_error>
#include <thread>
#include <vector>

namespace duckpart {

// Runs fn(t, w) for every task t in [0, n) on the calling thread (w = 0) and up to
// `extra_threads` threads started for the call (w = 1, 2, ...: a task may use scratch space of
// its worker). Each worker takes the next task in order, so tasks of unequal cost balance
// themselves. If tasks throw, the exception of the lowest-numbered one that threw is
// rethrown once every thread has ended, and tasks after it that had not started are skipped:
// with tasks that validate consecutive ranges of rows in order, the error is the one a serial
// loop would throw. Without a thread (the system refuses one), the calling thread runs every
// task. Starting a thread costs ~50 us: callers use this for work of milliseconds.
// The helper threads the write buffer's intake of a large batch starts (-1: one fewer than the
// cores, at most 3). Tests set it to run the threaded paths on any machine.
inline std::atomic<int> intake_helpers_override{-1};

template <typename Fn>
void run_parallel_tasks(std::size_t n, unsigned extra_threads, Fn&& fn) {
  std::atomic<std::size_t> next{0};
  std::atomic<std::size_t> stop_after{n};  // the lowest task that threw (n: none)
  std::mutex mu;
  std::exception_ptr error;
  std::size_t error_task = n;
  auto work = [&](std::size_t w) {
    for (;;) {
      const std::size_t t = next.fetch_add(1, std::memory_order_relaxed);
      if (t >= n || t > stop_after.load(std::memory_order_relaxed)) return;
      try {
        fn(t, w);
      } catch (...) {
        std::lock_guard lock(mu);
        if (t < error_task) {
          error_task = t;
          error = std::current_exception();
          stop_after.store(t, std::memory_order_relaxed);
        }
      }
    }
  };
  std::vector<std::thread> threads;
  const std::size_t want = std::min<std::size_t>(extra_threads, n > 0 ? n - 1 : 0);
  try {
    threads.reserve(want);
    for (std::size_t i = 0; i < want; ++i) threads.emplace_back(work, i + 1);
  } catch (const std::system_error&) {  // fewer threads: the others take their tasks
  } catch (const std::bad_alloc&) {
  }
  work(0);
  for (std::thread& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace duckpart
