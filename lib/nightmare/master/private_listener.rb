# frozen_string_literal: true

require "fileutils"
require "socket"
require "securerandom"
require_relative "../stats"

module Nightmare
  # The master's private UNIX listener: the front connects to it once per
  # buffered request and the workers accept on it with Unicorn's own loop,
  # so the kernel's accept queue holds requests for workers exactly as it
  # does behind nginx. It is not one of Unicorn's LISTENERS: USR2 does not
  # pass it on, and each master generation makes its own.
  #
  # Nothing else may get a request in: the socket sits in a directory only
  # the front's user can enter (Nightmare::RuntimeDir), and every connection
  # must open with a preamble carrying this master's secret, which only its
  # children know. Lives in the master; workers inherit the descriptor, the
  # front the path.
  class PrivateListener
    SECRET_BYTES = 16
    # Far above the requests the front keeps in flight (a few per worker).
    BACKLOG = 1024

    attr_reader :path, :secret, :io

    def initialize(runtime_dir)
      @master_pid = Process.pid
      @path = runtime_dir.file("sock")
      # A file named after this live process can only be a leftover of an
      # earlier process that had the same pid.
      File.unlink(@path) if File.socket?(@path)
      @io = UNIXServer.new(@path)
      @io.listen(BACKLOG)
      @io.close_on_exec = true
      File.chown(runtime_dir.uid, runtime_dir.gid, @path) if Process.euid.zero?
      @secret = SecureRandom.random_bytes(SECRET_BYTES)
    end

    # In the master when it exits; nothing in another process.
    def remove
      return unless Process.pid == @master_pid

      @io.close unless @io.closed?
      File.unlink(@path) if File.socket?(@path)
    end
  end
end
