# frozen_string_literal: true

require "etc"
require "fileutils"
require "kgio"
require "securerandom"
require "tmpdir"
require_relative "stats"

module Nightmare
  # The master's private UNIX listener: the front connects to it once per
  # buffered request and the workers accept on it with Unicorn's own loop,
  # so the kernel's accept queue holds requests for workers exactly as it
  # does behind nginx. It is not one of Unicorn's LISTENERS: USR2 does not
  # pass it on, and each master generation makes its own.
  #
  # Nothing else may get a request in: the socket sits in a directory only
  # the front's user can enter, and every connection must open with a
  # preamble carrying this master's secret, which only its children know.
  # Lives in the master; workers inherit the descriptor, the front the path.
  class PrivateListener
    SECRET_BYTES = 16
    # Far above the requests the front keeps in flight (a few per worker).
    BACKLOG = 1024

    attr_reader :path, :secret, :io

    # +owner+ is Unicorn's `user` setting ([user, group] or nil): a master
    # started as root makes the directory the front's once it drops to it.
    def initialize(owner = nil, base: Dir.tmpdir)
      @master_pid = Process.pid
      @uid, @gid = ids_of(owner)
      @dir = File.join(base, "nightmare-#{@uid}")
      prepare_directory
      remove_stale_sockets
      @path = File.join(@dir, "#{@master_pid}.sock")
      # A file named after this live process can only be a leftover of an
      # earlier process that had the same pid.
      File.unlink(@path) if File.socket?(@path)
      @io = Kgio::UNIXServer.new(@path)
      @io.listen(BACKLOG)
      @io.close_on_exec = true
      File.chown(@uid, @gid, @path) if Process.euid.zero?
      @secret = SecureRandom.random_bytes(SECRET_BYTES)
    end

    # In the master when it exits; nothing in another process.
    def remove
      return unless Process.pid == @master_pid

      @io.close unless @io.closed?
      File.unlink(@path) if File.socket?(@path)
      stats = Stats.path_for(@path)
      File.unlink(stats) if File.file?(stats)
    end

    private

    def ids_of(owner)
      return [Process.euid, Process.egid] unless owner && Process.euid.zero?

      user, group = owner
      entry = Etc.getpwnam(user)
      [entry.uid, group ? Etc.getgrnam(group).gid : entry.gid]
    end

    # Someone else's directory of that name (made in a shared /tmp before
    # us) must not be trusted with the workers' socket.
    def prepare_directory
      begin
        Dir.mkdir(@dir, 0o700)
        File.chown(@uid, @gid, @dir) if Process.euid.zero?
      rescue Errno::EEXIST
        nil
      end
      stat = File.lstat(@dir)
      return if stat.directory? && stat.uid == @uid && (stat.mode & 0o077).zero?

      raise ArgumentError, "nightmare: #{@dir} must be a directory owned by uid #{@uid} with mode 0700 " \
                           "(it holds the workers' private socket); remove it or set TMPDIR elsewhere"
    end

    # Sockets (and stats) of masters that are gone (killed outright, say).
    def remove_stale_sockets
      Dir.glob(File.join(@dir, "*.{sock,stats}")).each do |file|
        pid = File.basename(file)[/\A(\d+)\.(?:sock|stats)\z/, 1] or next
        next if pid.to_i == @master_pid || alive?(pid.to_i)

        File.unlink(file)
      rescue SystemCallError
        next # another master cleaned it first
      end
    end

    def alive?(pid)
      Process.kill(0, pid)
      true
    rescue Errno::ESRCH
      false
    rescue Errno::EPERM
      true
    end
  end
end
