# frozen_string_literal: true

require "etc"
require "fileutils"

module Nightmare
  # The writer behind the +nightmare+ directive. It is all the gem adds to
  # Unicorn::HttpServer until the directive is turned on; then the hooks in
  # Nightmare::HttpServer are prepended.
  module ServerSetting
    def nightmare=(options)
      @nightmare = options || nil
      return unless @nightmare

      Unicorn::HttpServer.prepend(Nightmare::HttpServer)
      # after_worker_exit= ran before this writer in commit!: wrap it now.
      self.after_worker_exit = @after_worker_exit if @after_worker_exit
    end
  end

  # Wraps the after_worker_exit hook so the front's exit is not reported as
  # an unknown worker's.
  class ExitHook
    def initialize(server, hook)
      @server = server
      @hook = hook
    end

    attr_reader :hook

    def call(server, worker, status)
      return if worker.nil? && @server.nightmare_front_reaped?(status)

      @hook.call(server, worker, status)
    end
  end

  # Hooks on Unicorn::HttpServer, prepended once +nightmare+ is on. Each calls
  # super; with +nightmare+ turned off again (HUP) they only call super.
  module HttpServer
    def after_worker_exit=(hook)
      hook = hook.hook if hook.is_a?(ExitHook)
      super(ExitHook.new(self, hook))
    end

    # The front comes up before the first workers, and again whenever the
    # master finds it missing.
    def spawn_missing_workers
      nightmare_maintain_front
      super
    end

    def reap_all_workers
      super
      nightmare_maintain_front
    end

    # USR1 reopens logs in the front too (the master tells its workers the
    # same way).
    def soft_kill_each_worker(signal)
      super
      @nightmare_front&.signal_all(signal) if signal == :USR1
    end

    # Wakes the master in time for a front restart that had to wait.
    def master_sleep(seconds)
      super(@nightmare && @nightmare_front ? [seconds, @nightmare_front.seconds_until_respawn].min : seconds)
    end

    def worker_processes=(count)
      super
      @nightmare_front&.worker_count = count
    end

    # The front stops first, finishing what it accepted while the workers
    # are still there to answer; then Unicorn stops the workers.
    def stop(graceful = true)
      # Before anything: stop's own reaping must not start a front again.
      @nightmare_stopping = true
      if @nightmare_front&.alive?
        # Long enough for the front's own drain (shutdown_timeout), at least.
        wait = [timeout, (@nightmare ? @nightmare[:shutdown_timeout] : 0) + 5].max
        @nightmare_front.shutdown(graceful, wait)
      end
      super
      @nightmare_front&.remove_runtime_files
    end

    def nightmare_front_reaped?(status) # :nodoc:
      @nightmare_front ? @nightmare_front.reaped?(status, stopping: @nightmare_stopping) : false
    end

    private

    # A worker takes requests from the front only, on the master's private
    # listener: the public listeners it inherited are closed (ones its
    # after_fork hook opened are kept), even while no front runs (one being
    # restarted): the private listener outlives fronts. With nightmare
    # turned off by a reload, a worker serves the public listeners again,
    # and still takes what a front that is finishing up hands it.
    def init_worker_process(worker)
      return super unless @nightmare_front && (@nightmare || @nightmare_front.alive?)

      # Listeners for fronts on other hosts stay the workers' own.
      inherited = Unicorn::HttpServer::LISTENERS.reject { |io| nightmare_for_other_fronts?(io) }
      acceptor = @nightmare_front.acceptor_for_worker
      readers = super
      if @nightmare
        readers.reject! { |io| inherited.include?(io) }
        Unicorn::HttpServer::LISTENERS.reject! { |io| inherited.include?(io) }
        inherited.each { |io| io.close rescue nil } # rubocop:disable Style/RescueModifier
      end
      readers.unshift(acceptor)
    end

    def nightmare_maintain_front
      return if @worker_data || @nightmare_stopping

      if @nightmare
        @nightmare_front ||= Nightmare::FrontSupervisor.new(logger, user, local_workers: nightmare_local_workers?)
        listeners = Unicorn::HttpServer::LISTENERS.reject { |io| nightmare_for_other_fronts?(io) }
        @nightmare_front.maintain(@nightmare, listeners, nightmare_tls_of(listeners), worker_processes) do
          nightmare_leave_master
        end
      elsif @nightmare_front&.running?
        @nightmare_front.retire("nightmare was turned off")
      end
    end

    # A listener marked proxy_protocol: fronts on other hosts send the
    # workers requests there (see Nightmare::ProxyProtocolAcceptor).
    def nightmare_for_other_fronts?(io)
      listener_opts.fetch(sock_name(io), {})[:proxy_protocol] == true
    end

    # The master runs workers the front hands requests to (a standalone
    # front's master runs none).
    def nightmare_local_workers? = true

    # Each listener's ssl block settings (see Nightmare::SSLConfigurator),
    # nil for plain HTTP.
    def nightmare_tls_of(listeners)
      listeners.map { |io| listener_opts.fetch(sock_name(io), {})[:ssl_opts] }
    end

    # In the new front process: let go of what belongs to the master, and of
    # root if the config names a `user` (the front is what reads untrusted
    # input). Returns the signal queue, which the master's handlers fill
    # until the front traps signals itself.
    def nightmare_leave_master
      @self_pipe.each(&:close).clear
      @workers.each_value(&:close)
      @workers.clear
      @ready_pipe = @ready_pipe.close if @ready_pipe
      proc_name "nightmare front"
      if user.is_a?(Array)
        nightmare_hand_acme_state_to(*user)
        # Unicorn's own privilege drop (groups, log ownership), as a worker's;
        # it needs no worker state, hence no Worker#initialize (no raindrop).
        Unicorn::Worker.allocate.user(*user)
      end
      @sig_queue
    end

    # The front orders certificates as `user`, so it must own the ACME
    # state the master made (as root) when it loaded the config.
    def nightmare_hand_acme_state_to(user_name, group_name = nil)
      return unless Process.euid.zero?

      account = Etc.getpwnam(user_name)
      gid = group_name ? Etc.getgrnam(group_name).gid : account.gid
      paths = listener_opts.values.filter_map { |opts| opts[:ssl_opts]&.acme&.state_path }.uniq
      paths.each { |path| FileUtils.chown_R(account.uid, gid, path) }
    end
  end
end

Unicorn::HttpServer.include(Nightmare::ServerSetting)
