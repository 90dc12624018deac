# frozen_string_literal: true

require "fileutils"
require "json"
require "net/http"
require "open3"
require "openssl"
require "socket"
require "timeout"

# Runs a throw-away Pebble ACME CA (plus pebble-challtestsrv as its DNS) on
# loopback for tests and benchmarks. Validation is real: Pebble connects to
# http_port (HTTP-01) / tls_port (TLS-ALPN-01) on 127.0.0.1 for every name,
# because the mock DNS answers every A query with 127.0.0.1.
#
#   pebble = PebbleServer.new(dir: "/tmp/p", http_port: 5002, tls_port: 5001)
#   pebble.start
#   ... pebble.directory_url, pebble.ca_file, pebble.root_pem ...
#   ensure pebble.stop
class PebbleServer
  class Error < StandardError; end

  START_TIMEOUT = 10 # seconds until the directory must answer
  STOP_TIMEOUT = 5   # seconds between TERM and KILL
  # Pebble 2.4 logs exactly one such line per certificate it signs.
  ISSUED_RE = /Issued certificate serial (\h+) for order (\S+)/
  ORDER_MARK = "Added order"

  attr_reader :dir, :http_port, :tls_port, :acme_port, :mgmt_port, :dns_port

  # validity:     certificate lifetime in seconds (nil = Pebble's default, 5 years)
  # authz_reuse:  percentage of valid authzs Pebble reuses; 0 forces a real
  #               validation for every order (renewals included)
  # nonce_reject: percentage of good nonces rejected (nil = Pebble's 5 %)
  def initialize(dir:, http_port:, tls_port:, validity: nil, authz_reuse: 0, nonce_reject: nil)
    @dir = File.expand_path(dir)
    @http_port = Integer(http_port)
    @tls_port = Integer(tls_port)
    @validity = validity && Integer(validity)
    @authz_reuse = authz_reuse
    @nonce_reject = nonce_reject
    @pids = {}
  end

  # Yields a started server and always stops it.
  def self.run(**opts)
    server = new(**opts).start
    yield server
  ensure
    server&.stop
  end

  def start
    raise Error, "already started" unless @pids.empty?

    FileUtils.mkdir_p(@dir)
    @acme_port, @mgmt_port, @dns_port, @chall_mgmt_port = self.class.free_ports(4, udp: [2])
    write_tls_files
    write_config
    spawn_challtestsrv
    spawn_pebble
    wait_until_ready
    self
  rescue StandardError, Interrupt
    stop # never leave half a setup behind
    raise
  end

  def stop
    # Only signal children not yet reaped, so a recycled PID is never hit.
    @pids.reverse_each { |name, pid| signal(pid, "TERM") if alive?(name) }
    deadline = now + STOP_TIMEOUT
    @pids.each_value do |pid|
      next if reap(pid, deadline)

      signal(pid, "KILL")
      reap(pid, now + 2)
    end
    @pids.clear
    @root_pem = nil
    self
  end

  def running?
    @pids.size == 2 && @pids.keys.all? { |name| alive?(name) }
  end

  def directory_url = "https://127.0.0.1:#{@acme_port}/dir"

  # CA that signed Pebble's own HTTPS certificate: give it to ACME clients.
  def ca_file = File.join(@dir, "ca.pem")

  # Root of the issuing chain; Pebble generates a new one at every start.
  def root_pem
    @root_pem ||= https_get("https://127.0.0.1:#{@mgmt_port}/roots/0")
  end

  # Writes root_pem to dir (for curl --cacert etc.) and returns the path.
  def root_file
    path = File.join(@dir, "issuer-root.pem")
    File.write(path, root_pem)
    path
  end

  def root_cert = OpenSSL::X509::Certificate.new(root_pem)

  # Serials (hex) of every certificate issued since start, in order.
  def issued_serials
    return [] unless File.exist?(pebble_log)

    File.foreach(pebble_log).filter_map { |line| line[ISSUED_RE, 1] }
  end

  def issued_count = issued_serials.size

  # Orders created since start (issued or not): "Added order ... to the db".
  def orders_count
    return 0 unless File.exist?(pebble_log)

    File.foreach(pebble_log).count { |line| line.include?(ORDER_MARK) }
  end

  # Makes the mock DNS answer +address+ for +name+ (every other name gets
  # 127.0.0.1): a name that does not point at the server under test.
  def point(name, address)
    uri = URI("http://127.0.0.1:#{@chall_mgmt_port}/add-a")
    response = Net::HTTP.post(uri, JSON.generate(host: name, addresses: [address]))
    raise Error, "add-a #{name}: #{response.code}" unless response.is_a?(Net::HTTPSuccess)
  end

  def pebble_log = File.join(@dir, "pebble.log")
  def challtestsrv_log = File.join(@dir, "challtestsrv.log")

  # Picks n distinct free loopback TCP ports (indices in udp: also free for UDP).
  # Sockets stay open until all are chosen so the kernel cannot hand out one twice.
  def self.free_ports(n, udp: [])
    held = []
    ports = []
    attempts = 0
    while ports.size < n
      raise Error, "no free ports" if (attempts += 1) > 50

      tcp = TCPServer.new("127.0.0.1", 0)
      held << tcp
      port = tcp.addr[1]
      # Never one the tests handed out already for a server still to start.
      next if defined?(LocalProcesses::HANDED_OUT) && !LocalProcesses::HANDED_OUT.add?(port)

      if udp.include?(ports.size)
        begin
          u = UDPSocket.new
          u.bind("127.0.0.1", port)
          held << u
        rescue SystemCallError
          next
        end
      end
      ports << port
    end
    ports
  ensure
    held&.each(&:close)
  end

  private

  def now = Process.clock_gettime(Process::CLOCK_MONOTONIC)

  def write_tls_files
    key = File.join(@dir, "ca.key")
    leaf_key = File.join(@dir, "pebble.key")
    csr = File.join(@dir, "pebble.csr")
    ext = File.join(@dir, "pebble.ext")
    File.write(ext, <<~EXT)
      basicConstraints = critical, CA:FALSE
      keyUsage = critical, digitalSignature
      extendedKeyUsage = serverAuth
      subjectAltName = IP:127.0.0.1, DNS:localhost
    EXT
    ec = %w[-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes]
    openssl("req", "-x509", *ec, "-keyout", key, "-out", ca_file, "-days", "7",
            "-subj", "/CN=PebbleServer test CA #{Process.pid}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", *ec, "-keyout", leaf_key, "-out", csr, "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", csr, "-CA", ca_file, "-CAkey", key, "-set_serial",
            rand(1 << 62).to_s, "-days", "7", "-extfile", ext, "-out", cert_file)
  end

  def cert_file = File.join(@dir, "pebble.pem")
  def config_file = File.join(@dir, "pebble-config.json")

  def openssl(*args)
    out, status = Open3.capture2e("openssl", *args)
    raise Error, "openssl #{args.first} failed: #{out}" unless status.success?
  end

  def write_config
    pebble = {
      listenAddress: "127.0.0.1:#{@acme_port}",
      managementListenAddress: "127.0.0.1:#{@mgmt_port}",
      certificate: cert_file,
      privateKey: File.join(@dir, "pebble.key"),
      httpPort: @http_port,
      tlsPort: @tls_port,
      ocspResponderURL: "",
      externalAccountBindingRequired: false
    }
    pebble[:certificateValidityPeriod] = @validity if @validity
    File.write(config_file, JSON.pretty_generate(pebble: pebble))
  end

  def spawn_challtestsrv
    # Only the DNS server is wanted; an empty -management would bind :80.
    cmd = ["pebble-challtestsrv",
           "-dns01", "127.0.0.1:#{@dns_port}",
           "-http01", "", "-https01", "", "-tlsalpn01", "",
           "-management", "127.0.0.1:#{@chall_mgmt_port}",
           "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]
    @pids[:challtestsrv] = spawn_logged(cmd, {}, challtestsrv_log)
    wait_for_port(@dns_port, :challtestsrv)
  end

  def spawn_pebble
    env = { "PEBBLE_VA_NOSLEEP" => "1", "PEBBLE_AUTHZREUSE" => @authz_reuse.to_s }
    env["PEBBLE_WFE_NONCEREJECT"] = @nonce_reject.to_s if @nonce_reject
    cmd = ["pebble", "-config", config_file, "-dnsserver", "127.0.0.1:#{@dns_port}"]
    @pids[:pebble] = spawn_logged(cmd, env, pebble_log)
  end

  def spawn_logged(cmd, env, log)
    Process.spawn(env, *cmd, in: File::NULL, out: [log, "w"], err: %i[child out],
                                chdir: @dir, unsetenv_others: false)
  end

  def wait_until_ready
    deadline = now + START_TIMEOUT
    loop do
      check_alive!
      begin
        return if https_get(directory_url, timeout: 1).include?("newOrder")
      rescue SystemCallError, OpenSSL::SSL::SSLError, Net::OpenTimeout, Net::ReadTimeout, Error
        nil # not listening yet
      end
      raise Error, "pebble not ready after #{START_TIMEOUT}s:\n#{tail(pebble_log)}" if now > deadline

      sleep 0.05
    end
  end

  def wait_for_port(port, name)
    deadline = now + START_TIMEOUT
    loop do
      check_alive!
      begin
        TCPSocket.new("127.0.0.1", port).close
        return
      rescue SystemCallError
        raise Error, "#{name} not listening on #{port}" if now > deadline

        sleep 0.02
      end
    end
  end

  def check_alive!
    @pids.keys.each do |name|
      next if alive?(name)

      log = name == :pebble ? pebble_log : challtestsrv_log
      raise Error, "#{name} exited early:\n#{tail(log)}"
    end
  end

  def https_get(url, timeout: 5)
    uri = URI(url)
    http = Net::HTTP.new(uri.host, uri.port)
    http.use_ssl = true
    http.ca_file = ca_file
    http.verify_mode = OpenSSL::SSL::VERIFY_PEER
    http.open_timeout = http.read_timeout = timeout
    res = http.start { |h| h.get(uri.request_uri) }
    raise Error, "GET #{url}: #{res.code}" unless res.is_a?(Net::HTTPSuccess)

    res.body
  end

  # Reaps an exited child and forgets it, so stop never signals its PID.
  def alive?(name)
    return true if Process.wait2(@pids.fetch(name), Process::WNOHANG).nil?

    @pids.delete(name)
    false
  rescue Errno::ECHILD
    @pids.delete(name)
    false
  end

  # True once pid has exited (reaped) before deadline.
  def reap(pid, deadline)
    loop do
      return true unless Process.wait2(pid, Process::WNOHANG).nil?
      return false if now > deadline

      sleep 0.02
    end
  rescue Errno::ECHILD
    true
  end

  def signal(pid, sig)
    Process.kill(sig, pid)
  rescue Errno::ESRCH
    nil
  end

  def tail(path, lines = 20)
    File.exist?(path) ? File.readlines(path).last(lines).join : "(no log)"
  end
end
