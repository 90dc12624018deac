# frozen_string_literal: true

module Nightmare
  # Unicorn 4's +ssl+ block, served by the front with rustls. The listeners
  # declared inside it speak HTTPS:
  #
  #   nightmare true
  #   ssl do
  #     listen 443
  #     ssl_certificate "/etc/ssl/example.com/fullchain.pem"
  #     ssl_certificate_key "/etc/ssl/example.com/privkey.pem"
  #   end
  #
  # More than one certificate/key pair may be given: each serves the names
  # in its subjectAltName (SNI), and the first one serves clients that ask
  # for no name or an unknown one. Directives of Unicorn 4 that rustls
  # cannot honour raise ArgumentError saying why. Unicorn alone has no TLS,
  # so +ssl+ without +nightmare+ on is refused when the config is loaded.
  module SSLConfigurator
    def ssl
      raise ArgumentError, "ssl blocks do not nest" if @nightmare_ssl
      raise ArgumentError, "ssl needs a block: ssl do listen 443; ssl_certificate ...; end" unless block_given?

      before = set[:listeners].dup
      @nightmare_ssl = { certificates: [], keys: [], acme_certificates: [] }
      yield
      settings = nightmare_tls_settings(@nightmare_ssl)
      nightmare_acme_names_once!(settings.acme)
      # Unicorn appends every listen, a repeated address too.
      inside = set[:listeners][before.size..] || []
      (inside & before).each do |address|
        raise ArgumentError, "ssl: listen #{address.inspect} is declared outside the ssl block already; a listener " \
                             "speaks plain HTTP or HTTPS, not both: give the ssl block its own port"
      end
      added = inside.uniq
      raise ArgumentError, "ssl: the block declares no listener (put `listen 443` inside it)" if added.empty?

      added.each do |address|
        if address.start_with?("/")
          raise ArgumentError, "ssl: listen #{address.inspect} is a UNIX socket; HTTPS needs a TCP listener"
        end
        set[:listener_opts][address][:ssl_opts] = settings
      end
    ensure
      @nightmare_ssl = nil
    end

    # The certificate chain, leaf first, in PEM. Repeat with
    # ssl_certificate_key for more names (SNI).
    def ssl_certificate(file)
      nightmare_ssl_file(:ssl_certificate, file)
      @nightmare_ssl[:certificates] << file
    end

    # The private key of the certificate given just before, in PEM
    # (PKCS#8, PKCS#1 RSA or SEC1 EC).
    def ssl_certificate_key(file)
      nightmare_ssl_file(:ssl_certificate_key, file)
      @nightmare_ssl[:keys] << file
    end

    # One certificate for these names, ordered from the block's
    # +acme_issuer+ and renewed by the front. Repeat for more certificates;
    # mix with ssl_certificate pairs as you like (SNI picks).
    def acme_certificate(*names)
      nightmare_ssl_block!(:acme_certificate)
      @nightmare_ssl[:acme_certificates] << names.flatten
    end

    # The ACME directory to order from (Let's Encrypt's when omitted), and
    # contact:, state_path:, accept_terms_of_service: (must be true),
    # ca_file: (a private issuer's CA, for its own HTTPS), challenge:
    # ("http-01" or "tls-alpn-01" only; both by default).
    def acme_issuer(directory = AcmeSettings::LETS_ENCRYPT, **options)
      nightmare_ssl_block!(:acme_issuer)
      raise ArgumentError, "acme_issuer is given twice in one ssl block" if @nightmare_ssl[:acme_issuer]

      unknown = options.keys - AcmeSettings::OPTIONS
      unless unknown.empty?
        raise ArgumentError, "acme_issuer: unknown option #{unknown.join(', ')} (known: " \
                             "#{AcmeSettings::OPTIONS.join(', ')})"
      end
      @nightmare_ssl[:acme_issuer] = [directory, options]
    end

    # "TLSv1.2 TLSv1.3" (the default), or either one.
    def ssl_protocols(list)
      nightmare_ssl_block!(:ssl_protocols)
      names = list.is_a?(Array) ? list.map(&:to_s) : list.to_s.split
      unsupported = names - TlsSettings::PROTOCOLS
      unless unsupported.empty?
        raise ArgumentError, "ssl_protocols=#{list.inspect}: rustls speaks only TLSv1.2 and TLSv1.3; " \
                             "drop #{unsupported.join(', ')}"
      end
      raise ArgumentError, "ssl_protocols=#{list.inspect} names no protocol" if names.empty?

      @nightmare_ssl[:protocols] = names.uniq
    end

    # Choose the cipher suite by the server's order, not the client's.
    def ssl_prefer_server_ciphers(bool)
      nightmare_ssl_block!(:ssl_prefer_server_ciphers)
      @nightmare_ssl[:prefer_server_ciphers] = check_bool(:ssl_prefer_server_ciphers, bool)
    end

    # HTTP/2 for clients that offer it (ALPN h2), on by default; false
    # keeps the block's clients on HTTP/1.1.
    def http2(bool)
      nightmare_ssl_block!(:http2)
      @nightmare_ssl[:http2] = check_bool(:http2, bool)
    end

    # Plain listeners answer every request with 308 to this block's first
    # listener (same host and target), as nginx's `return 308
    # https://$host$request_uri`. `nightmare ssl_redirect: true` does the
    # same for the first ssl block.
    def ssl_redirect(bool)
      nightmare_ssl_block!(:ssl_redirect)
      @nightmare_ssl[:redirect] = check_bool(:ssl_redirect, bool)
    end

    # rustls never compresses (CRIME): false is what it does already.
    def ssl_compression(bool)
      nightmare_ssl_block!(:ssl_compression)
      return unless check_bool(:ssl_compression, bool)

      raise ArgumentError, "ssl_compression=true: TLS compression leaks secrets (CRIME) and rustls has none; " \
                           "remove the line"
    end

    def ssl_ciphers(_openssl_cipher_list)
      nightmare_unsupported(:ssl_ciphers, "takes an OpenSSL cipher list, and rustls is not OpenSSL: it offers " \
                                          "only AEAD suites with forward secrecy (AES-GCM, ChaCha20-Poly1305)")
    end

    def ssl_dhparam(_file)
      nightmare_unsupported(:ssl_dhparam, "is for finite-field Diffie-Hellman, which rustls does not do " \
                                          "(it uses ECDHE: X25519, P-256, P-384)")
    end

    def ssl_session_timeout(_seconds)
      nightmare_unsupported(:ssl_session_timeout, "cannot be set: rustls keeps sessions by its own rules " \
                                                  "(tickets are good for up to 6 hours)")
    end

    def ssl_engine(_engine)
      nightmare_unsupported(:ssl_engine, "names an OpenSSL engine, and rustls is not OpenSSL")
    end

    %i[ssl_client_certificate ssl_verify_client ssl_verify_depth ssl_crl].each do |directive|
      define_method(directive) do |_value|
        nightmare_unsupported(directive, "is not supported yet: the front does not ask clients for certificates")
      end
    end

    private

    def nightmare_ssl_block!(directive)
      @nightmare_ssl or raise ArgumentError, "#{directive} must be called inside an `ssl' block"
    end

    def nightmare_ssl_file(directive, file)
      nightmare_ssl_block!(directive)
      String === file or raise ArgumentError, "not a path: #{directive}=#{file.inspect}"
    end

    def nightmare_unsupported(directive, why)
      raise ArgumentError, "#{directive} #{why}; remove the line"
    end

    def nightmare_tls_settings(block)
      certificates, keys = block.values_at(:certificates, :keys)
      acme = nightmare_acme_settings(block)
      if certificates.empty? && !acme
        raise ArgumentError, "ssl: the block needs ssl_certificate and ssl_certificate_key, or acme_certificate"
      end
      if certificates.size != keys.size
        raise ArgumentError, "ssl: #{certificates.size} ssl_certificate but #{keys.size} ssl_certificate_key; " \
                             "give each certificate its key"
      end

      TlsSettings.new(certificates: certificates.zip(keys),
                      protocols: block.fetch(:protocols, TlsSettings::PROTOCOLS),
                      prefer_server_ciphers: block.fetch(:prefer_server_ciphers, false),
                      http2: block.fetch(:http2, true),
                      redirect: block.fetch(:redirect, false),
                      acme: acme)
    end

    # Two blocks ordering one name would write one state directory twice.
    def nightmare_acme_names_once!(acme)
      return unless acme

      @nightmare_acme_names ||= {}
      acme.certificates.flatten.each do |name|
        if @nightmare_acme_names[name]
          raise ArgumentError, "acme_certificate: #{name} is ordered by another ssl block already; name it in one"
        end

        @nightmare_acme_names[name] = true
      end
    end

    def nightmare_acme_settings(block)
      lines = block[:acme_certificates]
      directory, options = block[:acme_issuer]
      if lines.empty?
        return unless directory

        raise ArgumentError, "acme_issuer without acme_certificate: name the certificate's hosts " \
                             "(acme_certificate \"example.com\")"
      end
      AcmeSettings.new(certificates: lines, directory: directory || AcmeSettings::LETS_ENCRYPT, **(options || {}))
    end
  end
end

Unicorn::Configurator.prepend(Nightmare::SSLConfigurator)
