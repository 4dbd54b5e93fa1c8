// detail: where Queue, LifoQueue and PriorityQueue keep their items. Each
// grows to the queue's working size and then allocates nothing per item.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace polyloop::detail {

// FIFO: a power-of-two ring (std::deque would allocate and free a block
// every few hundred items as the queue moves on).
template <class T>
class fifo_storage {
 public:
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }
  void push(T&& item) {
    if (size_ == slots_.size()) grow();
    slots_[(head_ + size_) & (slots_.size() - 1)].emplace(std::move(item));
    ++size_;
  }
  T pop() {
    std::optional<T>& slot = slots_[head_];
    T item = std::move(*slot);
    slot.reset();
    head_ = (head_ + 1) & (slots_.size() - 1);
    --size_;
    return item;
  }
  void clear() {
    while (size_ != 0) pop();
  }

 private:
  void grow() {
    std::vector<std::optional<T>> bigger(slots_.empty() ? 16 : slots_.size() * 2);
    for (std::size_t i = 0; i < size_; ++i) bigger[i] = pop_at(i);
    slots_ = std::move(bigger);
    head_ = 0;
  }
  std::optional<T> pop_at(std::size_t i) {
    return std::move(slots_[(head_ + i) & (slots_.size() - 1)]);
  }
  std::vector<std::optional<T>> slots_;
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

// LIFO: the last item put is the first got.
template <class T>
class lifo_storage {
 public:
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  void push(T&& item) { items_.push_back(std::move(item)); }
  T pop() {
    T item = std::move(items_.back());
    items_.pop_back();
    return item;
  }
  void clear() { items_.clear(); }

 private:
  std::vector<T> items_;
};

// Smallest first (by Compare, std::less by default), as heapq. A heap over
// a vector rather than std::priority_queue, whose top() is const and so
// cannot hand a move-only item out.
template <class T, class Compare>
class priority_storage {
 public:
  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  void push(T&& item) {
    items_.push_back(std::move(item));
    std::push_heap(items_.begin(), items_.end(), greater());
  }
  T pop() {
    std::pop_heap(items_.begin(), items_.end(), greater());
    T item = std::move(items_.back());
    items_.pop_back();
    return item;
  }
  void clear() { items_.clear(); }

 private:
  // std::*_heap keep the largest on top; reversing the order puts the smallest there.
  auto greater() const {
    return [this](const T& a, const T& b) { return compare_(b, a); };
  }
  std::vector<T> items_;
  Compare compare_;
};

}  // namespace polyloop::detail
