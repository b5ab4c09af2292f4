// placeholder, replaced by the daemon entry point
export {};
