// The loop's ready queue: a FIFO ring of intrusive nodes.
//
// Anything that can become ready (a scheduled callback, a completed backend
// operation, a coroutine waiting to resume) embeds a ready_node, so pushing
// allocates nothing once the ring has grown to the loop's working size.
// Single-threaded: only the loop's thread touches it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace polyloop::detail {

struct ready_node {
  enum class action : std::uint8_t { run, discard };
  // run: do the work. discard: the loop is closing and the node will never
  // run; release whatever it owns.
  void (*fn)(ready_node* self, action what) = nullptr;
};

class ready_queue {
 public:
  ready_queue() { grow(); }
  ready_queue(const ready_queue&) = delete;
  ready_queue& operator=(const ready_queue&) = delete;
  ~ready_queue() { discard_all(); }

  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

  void push(ready_node* node) {
    if (size_ == capacity_) grow();
    slots_[(head_ + size_) & (capacity_ - 1)] = node;
    ++size_;
  }

  ready_node* pop() noexcept {
    ready_node* node = slots_[head_];
    head_ = (head_ + 1) & (capacity_ - 1);
    --size_;
    return node;
  }

  // Releases every node without running it (loop close).
  void discard_all() noexcept {
    while (size_ != 0) {
      ready_node* node = pop();
      node->fn(node, ready_node::action::discard);
    }
  }

 private:
  [[gnu::noinline]] void grow() {
    std::size_t new_capacity = capacity_ == 0 ? 256 : capacity_ * 2;
    // Not zero-filled: every slot is written before it is read.
    auto slots = std::make_unique_for_overwrite<ready_node*[]>(new_capacity);
    for (std::size_t i = 0; i < size_; ++i) slots[i] = slots_[(head_ + i) & (capacity_ - 1)];
    slots_ = std::move(slots);
    capacity_ = new_capacity;
    head_ = 0;
  }

  std::unique_ptr<ready_node*[]> slots_;
  std::size_t capacity_ = 0;  // always a power of two
  std::size_t head_ = 0;
  std::size_t size_ = 0;
};

}  // namespace polyloop::detail
