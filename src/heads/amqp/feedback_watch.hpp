#pragma once
// Wakes the service SDK's feedback receivers when C2D feedback records are ready. c2d::service
// has one feedback notifier; the composition root points it at notify(), and this fans the news
// out to every receiver (on any connection) that found nothing to receive and waits.
//
// Lost wake-ups are avoided with a generation counter: a receiver reads generation() before it
// asks the service for a batch, and waits with that number; a notify() in between wakes it at
// once.
//
// Owner: the composition root; outlives the listeners. Thread safety: every method may be called
// from any thread; `wake` callbacks run on the notifying thread (or the caller's, when already
// due), outside the lock: keep them short (post to your own executor).
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace hub::amqp_head {

class feedback_watch {
 public:
  // The c2d service's feedback notifier: records became receivable.
  void notify();
  // How many notify() calls there have been.
  std::uint64_t generation() const;
  // Calls `wake` once, after a notify() that came later than generation `seen` (at once if one
  // already did). Once `owner` is gone the wait is dropped without a call.
  void wait(std::uint64_t seen, std::weak_ptr<void> owner, std::function<void()> wake);

  std::size_t waiting() const;

 private:
  struct waiter {
    std::weak_ptr<void> owner;
    std::function<void()> wake;
  };
  mutable std::mutex mutex_;
  std::uint64_t generation_ = 0;
  std::vector<waiter> waiters_;
};

}  // namespace hub::amqp_head
