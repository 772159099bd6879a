#include "heads/amqp/feedback_watch.hpp"

#include <utility>

namespace hub::amqp_head {

void feedback_watch::notify() {
  std::vector<waiter> due;
  {
    std::scoped_lock lock(mutex_);
    ++generation_;
    due.swap(waiters_);
  }
  for (waiter& w : due) {
    if (!w.owner.expired()) w.wake();
  }
}

std::uint64_t feedback_watch::generation() const {
  std::scoped_lock lock(mutex_);
  return generation_;
}

void feedback_watch::wait(std::uint64_t seen, std::weak_ptr<void> owner, std::function<void()> wake) {
  {
    std::scoped_lock lock(mutex_);
    if (generation_ == seen) {
      // Waits of receivers that have gone are dropped here, so they cannot pile up while no
      // feedback comes.
      std::erase_if(waiters_, [](const waiter& w) { return w.owner.expired(); });
      waiters_.push_back(waiter{std::move(owner), std::move(wake)});
      return;
    }
  }
  if (!owner.expired()) wake();
}

std::size_t feedback_watch::waiting() const {
  std::scoped_lock lock(mutex_);
  return waiters_.size();
}

}  // namespace hub::amqp_head
