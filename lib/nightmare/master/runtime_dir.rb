# frozen_string_literal: true

require "etc"
require "tmpdir"

module Nightmare
  # $TMPDIR/nightmare-UID: where a master keeps what its front and workers
  # share (the workers' private socket, the front's stats), readable by the
  # server's user alone, one file name per master pid. Files of masters
  # that are gone (killed outright) are removed when the next one starts.
  class RuntimeDir
    attr_reader :path, :uid, :gid

    # +owner+ is Unicorn's `user` setting ([user, group] or nil): a master
    # started as root makes the directory the front's once it drops to it.
    def initialize(owner = nil, base: Dir.tmpdir)
      @uid, @gid = ids_of(owner)
      @path = File.join(base, "nightmare-#{@uid}")
      prepare
      remove_stale_files
    end

    # A file of this master's, in the directory.
    def file(extension) = File.join(@path, "#{Process.pid}.#{extension}")

    private

    def ids_of(owner)
      return [Process.euid, Process.egid] unless owner && Process.euid.zero?

      user, group = owner
      entry = Etc.getpwnam(user)
      [entry.uid, group ? Etc.getgrnam(group).gid : entry.gid]
    end

    # Someone else's directory of that name (made in a shared /tmp before
    # us) must not be trusted with the workers' socket.
    def prepare
      begin
        Dir.mkdir(@path, 0o700)
        File.chown(@uid, @gid, @path) if Process.euid.zero?
      rescue Errno::EEXIST
        nil
      end
      stat = File.lstat(@path)
      return if stat.directory? && stat.uid == @uid && (stat.mode & 0o077).zero?

      raise ArgumentError, "nightmare: #{@path} must be a directory owned by uid #{@uid} with mode 0700 " \
                           "(it holds the workers' private socket); remove it or set TMPDIR elsewhere"
    end

    def remove_stale_files
      Dir.glob(File.join(@path, "*.{sock,stats}")).each do |file|
        pid = File.basename(file)[/\A(\d+)\.(?:sock|stats)\z/, 1] or next
        next if pid.to_i == Process.pid || alive?(pid.to_i)

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
