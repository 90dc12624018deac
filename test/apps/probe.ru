# frozen_string_literal: true

# The app integration tests talk to: each endpoint shows one thing the
# front must get right.
require "digest"
require "json"

use Rack::Head
# As Rails does with config.action_dispatch.x_sendfile_header =
# "X-Accel-Redirect"; the mapping comes from the front (X-Accel-Mapping).
use Rack::Sendfile, "X-Accel-Redirect"

# A body that is a file (Rack::Files and Rails' send_file give one).
FileBody = Struct.new(:path) do
  def to_path = path

  def each
    File.open(path, "rb") { |file| while (chunk = file.read(65_536)) do yield chunk end }
  end
end

requests_seen = 0

run lambda { |env|
  requests_seen += 1
  case env["PATH_INFO"]
  when "/env"
    facts = env.slice("REMOTE_ADDR", "REQUEST_METHOD", "SERVER_PROTOCOL", "CONTENT_LENGTH",
                      "HTTP_HOST", "HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_HOST",
                      "HTTP_X_REQUEST_START", "HTTP_TRANSFER_ENCODING", "HTTP_CONNECTION", "HTTP_EXPECT",
                      "HTTP_CLIENT_IP", "HTTP_X_REAL_IP", "HTTP_TRUE_CLIENT_IP", "PATH_INFO", "SERVER_NAME",
                      "SERVER_PORT", "HTTP_X_ACCEL_MAPPING", "HTTP_X_SENDFILE_TYPE")
    facts["rack.url_scheme"] = env["rack.url_scheme"]
    facts["host"] = ENV.fetch("TEST_HOST", "local")
    env.each { |name, value| facts["#{name} bytes"] = value.bytesize if name.start_with?("HTTP_X_LONG") }
    facts["body"] = env["rack.input"].read
    [200, { "content-type" => "application/json" }, [JSON.generate(facts)]]
  when "/upload"
    digest = Digest::SHA256.new
    size = 0
    while (chunk = env["rack.input"].read(1 << 16))
      digest << chunk
      size += chunk.bytesize
    end
    [200, { "content-type" => "text/plain" }, ["#{size} #{digest.hexdigest}"]]
  when "/bytes"
    size = Integer(env["QUERY_STRING"])
    [200, { "content-type" => "application/octet-stream", "content-length" => size.to_s }, ["b" * size]]
  when "/count"
    # Run with one worker: how many requests reached the app.
    [200, { "content-type" => "text/plain" }, [requests_seen.to_s]]
  when "/nightmare_stats"
    [200, { "content-type" => "application/json" }, [JSON.generate(Nightmare.stats)]]
  when "/pid"
    [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
  when "/send_file"
    # Rails' send_file: the path is the query, a file under a sendfile_root.
    path = Rack::Utils.unescape(env["QUERY_STRING"])
    [200, { "content-type" => "application/pdf", "content-disposition" => 'attachment; filename="r.pdf"',
            "content-length" => File.size(path).to_s, "x-runtime" => "0.01" }, FileBody.new(path)]
  when "/app_error"
    # The app's own 5xx, which no error_page may replace.
    [503, { "content-type" => "text/plain" }, ["the app's own 503\n"]]
  when "/own_hsts"
    # An app that sets its own policy: the front's must not be added.
    [200, { "content-type" => "text/plain", "strict-transport-security" => "max-age=5" }, ["own"]]
  when "/host"
    # Which host answered, for tests with Unicorns on several (TEST_HOST).
    # Its length is given, as Rack's ContentLength gives it: a body that
    # ends only with the connection is lost whenever its last packet is
    # (a host taken off the network just after answering).
    host = ENV.fetch("TEST_HOST", "local")
    [200, { "content-type" => "text/plain", "content-length" => host.bytesize.to_s }, [host]]
  when "/arrive"
    # Leaves a file per arrival in the directory named, then sleeps: a test
    # counts how many times a request ran, whichever host ran it.
    params = Rack::Utils.parse_query(env["QUERY_STRING"])
    File.write(File.join(params.fetch("dir"), "#{ENV.fetch('TEST_HOST', 'local')}-#{Process.pid}-#{rand(1 << 32)}"),
               env["REQUEST_METHOD"])
    sleep Float(params.fetch("seconds", "0"))
    [200, { "content-type" => "text/plain" }, [ENV.fetch("TEST_HOST", "local")]]
  when "/hold"
    # Says it is inside the app (its pid in the mark file), then sleeps.
    params = Rack::Utils.parse_query(env["QUERY_STRING"])
    File.write(params.fetch("mark"), Process.pid.to_s)
    sleep Float(params.fetch("seconds"))
    [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
  when "/sleep"
    sleep Float(env["QUERY_STRING"])
    [200, { "content-type" => "text/plain" }, [Process.pid.to_s]]
  else
    [200, { "content-type" => "text/plain", "content-length" => "6" }, ["hello\n"]]
  end
}
