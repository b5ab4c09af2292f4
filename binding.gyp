{
  "targets": [
    {
      "target_name": "virtiofsd_native",
      "sources": [
        "native/addon.cc", "native/memory.cc", "native/socket.cc", "native/events.cc", "native/ring.cc", "native/vring.cc", "native/io.cc", "native/fsops.cc", "native/state.cc", "native/nodeops.cc", "native/fileops.cc", "native/asyncops.cc", "native/iopool.cc", "native/fastpath.cc", "native/kickthread.cc", "native/fsetid.cc", "native/umask.cc", "native/sandbox.cc", "native/seccomp.cc", "native/dirtylog.cc", "native/migration.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"]
    },
    {
      "target_name": "virtiofsd_bench",
      "sources": ["bench/native/ring-driver.cc"],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc!": ["-fno-exceptions"]
    }
  ]
}
