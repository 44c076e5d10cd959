//! configfs-tsm reports. PLACEHOLDER being written.
