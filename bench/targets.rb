# frozen_string_literal: true

require "socket"
require "fileutils"

# The servers compared, each started in its own directory with two Ruby
# workers, and stopped by the PID it was started with.
module Bench
  WORKERS = 2

  class Target
    attr_reader :name, :port, :dir

    def initialize(name, root)
      @name = name
      @dir = File.join(root, name.downcase.gsub(/[^a-z]+/, "-"))
      FileUtils.mkdir_p(@dir)
      FileUtils.cp(File.join(__dir__, "app.ru"), File.join(@dir, "config.ru"))
      @port = LocalProcesses.free_port
      @pids = []
    end

    def url(path = "/") = "http://127.0.0.1:#{@port}#{path}"

    def stop
      @pids.reverse_each do |pid|
        Process.kill(:QUIT, pid)
        wait(pid, 15) or (Process.kill(:KILL, pid) && wait(pid, 5))
      rescue Errno::ESRCH, Errno::ECHILD
        next
      end
    end

    # Peak resident memory (KiB) of the process serving clients directly.
    def front_peak_rss_kib = nil

    # Processes that face clients in front of the Ruby workers, if any.
    def front_pids = []

    # The processes that run the application.
    def worker_pids = LocalProcesses.children_of(@pids.first)

    private

    # Servers start outside the project's bundle (`rake bench` may run
    # under `bundle exec`, and puma is not in the Gemfile), as a user would
    # start them.
    def spawn(*command, env: {}, log: "server.log")
      base = defined?(Bundler) ? Bundler.unbundled_env : ENV.to_h
      pid = Process.spawn(base.merge(env), *command, chdir: @dir, out: File.join(@dir, log), err: %i[child out],
                                                     pgroup: true, unsetenv_others: true)
      @pids << pid
      pid
    end

    def unicorn(config)
      File.write(File.join(@dir, "unicorn.conf.rb"), config)
      spawn(RbConfig.ruby, UNICORN_BIN, "-c", "unicorn.conf.rb", "config.ru",
            env: { "RUBYLIB" => File.join(ROOT, "lib"), "RACK_ENV" => "none" })
    end

    def wait_for_port(port = @port, seconds = 20)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
      begin
        TCPSocket.new("127.0.0.1", port).close
      rescue SystemCallError
        raise "#{@name} did not start: #{Dir[File.join(@dir, '*.log')].map { |f| File.read(f) }.join}" if
          Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.1
        retry
      end
      sleep 1 # let every worker finish booting
    end

    def wait(pid, seconds)
      deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
      until Process.waitpid(pid, Process::WNOHANG)
        return false if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

        sleep 0.05
      end
      true
    end

  end

  class UnicornAlone < Target
    def start
      unicorn(<<~CONFIG)
        worker_processes #{WORKERS}
        listen "127.0.0.1:#{@port}"
        stderr_path "#{@dir}/unicorn.log"
      CONFIG
      wait_for_port
      self
    end
  end

  # Unicorn's documented deployment: nginx buffers clients, Unicorn listens
  # on a UNIX socket.
  class NginxUnicorn < Target
    # +worker_connections+ per nginx worker: room for many holders in
    # bench/many_clients.rb.
    # +server+ is more of nginx's configuration for the server block;
    # +listen_also+ another address to listen on, on the same port.
    def initialize(name, root, worker_connections: 4096, server: "", listen_also: nil)
      super(name, root)
      @worker_connections = worker_connections
      @server = server
      @listen_also = listen_also
    end

    def start
      start_with(<<~HTTP)
        client_max_body_size 100m;
        server {
          listen 127.0.0.1:#{@port};
          #{@listen_also ? "listen #{@listen_also}:#{@port};" : ''}
          #{@server}
          location / {
            proxy_pass http://unicorn;
            proxy_buffering on;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
          }
        }
      HTTP
      wait_for_port
      self
    end

    def front_peak_rss_kib = front_pids.sum { |pid| LocalProcesses.peak_rss_kib(pid) }
    def front_pids = LocalProcesses.children_of(@nginx)

    private

    # Unicorn on a UNIX socket, and nginx with +http+ (its servers) beside
    # an upstream named unicorn, temp files in this target's directory.
    def start_with(http)
      socket = File.join(@dir, "unicorn.sock")
      unicorn(<<~CONFIG)
        worker_processes #{WORKERS}
        listen "#{socket}"
        stderr_path "#{@dir}/unicorn.log"
      CONFIG
      %w[client_body proxy fastcgi uwsgi scgi].each { |d| FileUtils.mkdir_p(File.join(@dir, d)) }
      File.write(File.join(@dir, "nginx.conf"), <<~NGINX)
        daemon off;
        master_process on;
        user root;
        worker_processes #{WORKERS};
        pid #{@dir}/nginx.pid;
        error_log #{@dir}/nginx-error.log warn;
        worker_rlimit_nofile #{@worker_connections * 2 + 1024};
        events { worker_connections #{@worker_connections}; }
        http {
          access_log off;
          client_body_temp_path #{@dir}/client_body;
          proxy_temp_path #{@dir}/proxy;
          fastcgi_temp_path #{@dir}/fastcgi;
          uwsgi_temp_path #{@dir}/uwsgi;
          scgi_temp_path #{@dir}/scgi;
          upstream unicorn { server unix:#{socket} fail_timeout=0; }
        #{http.gsub(/^/, '  ').strip}
        }
      NGINX
      @nginx = spawn("nginx", "-c", File.join(@dir, "nginx.conf"), log: "nginx.log")
    end
  end

  class UnicornNightmare < Target
    # +settings+ go to the nightmare directive beside the benchmark's own;
    # +config+ is more of Unicorn's configuration; +listen_also+ another
    # address to listen on, on the same port.
    def initialize(name, root, settings: {}, config: "", listen_also: nil)
      super(name, root)
      @settings = { client_max_body_size: "100m" }.merge(settings)
      @config = config
      @listen_also = listen_also
    end

    def start
      @master = unicorn(<<~CONFIG)
        require "nightmare"
        worker_processes #{WORKERS}
        listen "127.0.0.1:#{@port}"
        #{@listen_also ? "listen \"#{@listen_also}:#{@port}\"" : ''}
        stderr_path "#{@dir}/unicorn.log"
        nightmare(#{@settings.inspect})
        #{@config}
      CONFIG
      wait_for_port
      self
    end

    def front_peak_rss_kib
      front = front_pids.first
      front && LocalProcesses.peak_rss_kib(front)
    end

    def front_pids = LocalProcesses.children_of(@master).select { |pid| LocalProcesses.cmdline(pid).include?("nightmare front") }
    def worker_pids = LocalProcesses.children_of(@master).select { |pid| LocalProcesses.cmdline(pid).include?("worker[") }
  end

  class Puma < Target
    def start
      spawn("puma", "-w", WORKERS.to_s, "-t", "5:5", "-b", "tcp://127.0.0.1:#{@port}", "--environment", "none",
            "config.ru", env: { "RACK_ENV" => "none" }, log: "puma.log")
      wait_for_port
      self
    end
  end
end
