// detail::stepping_task: the task whose step runs on this thread now, or
// ran last (its task_root, as an opaque pointer). Written as a task resumes
// (task_root::resume_point and a task's first step: one store, in place of
// a store those paths made anyway); read only by debug mode, after a slow
// step, to name the task, and only once the loop has checked that the task
// is still alive. One thread runs one loop at a time.
#pragma once

namespace polyloop::detail {

inline constinit thread_local const void* stepping_task = nullptr;

}  // namespace polyloop::detail
